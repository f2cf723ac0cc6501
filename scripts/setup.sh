#!/usr/bin/env bash
# Sets up ddsp-pd in ./.venv (Python 3.10-3.12) and, where apt-get and root are available,
# the Debian packages the tests use (Pure Data). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_apt=()
command -v pd >/dev/null 2>&1 || want_apt+=(puredata-core)
# ddsp-pd live: PortAudio for sounddevice, and a JACK dummy server for its device test.
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || want_apt+=(libportaudio2)
command -v jackd >/dev/null 2>&1 || want_apt+=(jackd2)
# fluidsynth + fluid-soundfont-gm are only for the training recipe (scripts/make_training_audio.py).
if [ "${DDSP_PD_TRAINING_AUDIO:-0}" = 1 ] && ! command -v fluidsynth >/dev/null 2>&1; then
  want_apt+=(fluidsynth fluid-soundfont-gm)
fi
if [ "${#want_apt[@]}" -gt 0 ] && [ "${DDSP_PD_SKIP_APT:-0}" != 1 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${want_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${want_apt[@]}" >/dev/null
  else
    echo "setup: not installing ${want_apt[*]} (needs apt-get as root); Pd tests will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# Rendering and serving need no TensorFlow; the tests (and training, CREPE) take the extras.
extras=${DDSP_PD_EXTRAS-test,train,crepe}
echo "setup: installing ddsp-pd${extras:+ with [$extras]} (first time takes minutes)" >&2
python -m pip install -q -e ".${extras:+[$extras]}"
