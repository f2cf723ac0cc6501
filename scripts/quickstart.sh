#!/usr/bin/env bash
# Sets up ddsp-pd and renders the shipped example with the shipped default model.
set -euo pipefail
cd "$(dirname "$0")/.."
# Rendering needs no TensorFlow: only the core install (scripts/test.sh adds the extras).
DDSP_PD_SKIP_APT=${DDSP_PD_SKIP_APT:-1} DDSP_PD_EXTRAS=${DDSP_PD_EXTRAS-} bash scripts/setup.sh
. .venv/bin/activate
mkdir -p out
ddsp-pd render examples/melody.wav -o out/melody_default.wav
echo "listen: out/melody_default.wav"
