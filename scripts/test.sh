#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check ddsp_pd tests benchmarks scripts
python -m pytest -q -rs "$@"
