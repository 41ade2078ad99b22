#!/usr/bin/env bash
# Set up (as scripts/setup.sh) and run the default test suite (~5-10 minutes on 2 CPU cores).
# Slow tests are marked `slow`: run them with `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "[test]"
. .venv/bin/activate
python -m pytest "$@"
