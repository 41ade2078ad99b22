#!/usr/bin/env bash
# Create .venv (if absent) and install nmt into it. Sourced by quickstart.sh and test.sh.
# torch==2.13.0 is installed first: on a CPU machine that is the CPU wheel, and pip then keeps it
# instead of pulling several GB of CUDA packages for an unpinned `torch`. GPU users: install the
# torch build for your CUDA first (https://pytorch.org), then `pip install -e .`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extra="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".${extra}"
