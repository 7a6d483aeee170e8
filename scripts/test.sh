#!/usr/bin/env bash
# The test command: lint, format checks, the unit and workflow tests, then the demo DAG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests workflow benchmarks
.venv/bin/snakefmt --check Snakefile rules
.venv/bin/snakemake --lint --configfile config/demo.yaml
.venv/bin/snakemake --lint
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
