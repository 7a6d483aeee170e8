#!/usr/bin/env bash
# The demo end to end: tiny twins, a generated bench, every figure and table, and the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/snakemake --configfile config/demo.yaml --cores "${CORES:-2}"
.venv/bin/snakemake --configfile config/demo.yaml --report results/demo/report.zip
echo "Report: results/demo/report.zip (unzip it and open report.html)"
