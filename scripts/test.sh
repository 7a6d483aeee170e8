#!/usr/bin/env bash
# The test command: lint, format checks, the unit and workflow tests, then the demo DAG and its report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests workflow benchmarks
.venv/bin/snakefmt --check Snakefile rules
.venv/bin/snakemake --lint --configfile config/demo.yaml
.venv/bin/snakemake --lint
# The demo DAG end to end (tiny twins, generated bench), in its own results folder.
rm -rf results/demo resources/demo
.venv/bin/snakemake --configfile config/demo.yaml --cores "${CORES:-2}" --quiet rules
.venv/bin/snakemake --configfile config/demo.yaml --report results/demo/report.zip
test -s results/demo/report.zip && test -s results/demo/tables/summary.md
echo "demo DAG: ok"
# Last, so that pytest's summary closes the output.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
