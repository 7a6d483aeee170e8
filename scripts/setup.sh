#!/usr/bin/env bash
# Create .venv with everything the workflow, the demo and the tests need (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.stepscope-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first, pinned: on x86-64 Linux this is the build the project is tested with.
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
    # diffsynth's LTX-2 pipeline imports torchaudio and av; no torchaudio release pins torch 2.14,
    # and only its pure-Python parts are used, so it goes in without pulling another torch.
    .venv/bin/python -m pip install -q --no-deps torchaudio==2.11.0 av==18.1.0
    .venv/bin/python -m pip install -q -e ".[workflow,dev]"
    touch "$stamp"
fi
