#!/usr/bin/env bash
# The test command: lint, format checks, the demo DAG and its report, the demo again through a real
# single-node SLURM cluster (scripts/slurm_cluster.sh), then the unit, workflow and SLURM tests.
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

# The same demo through SLURM (`--profile profiles/slurm`); tests/test_slurm.py checks that every
# job went through sbatch and that its results equal the local run's.
cluster=$(pwd)/.slurm
bash scripts/slurm_cluster.sh start "$cluster"
trap 'bash scripts/slurm_cluster.sh stop "$cluster"' EXIT
export STEPSCOPE_SLURM_DIR=$cluster
rm -rf results/demo-slurm resources/demo-slurm logs/slurm
slurm_options=(--slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 --slurm-no-account
    --latency-wait 10)
.venv/bin/snakemake --profile profiles/slurm --configfile config/demo.yaml \
    --config results=results/demo-slurm resources=resources/demo-slurm "${slurm_options[@]}" \
    > results/demo-slurm.log 2>&1 || { tail -50 results/demo-slurm.log; exit 1; }
echo "demo through SLURM: ok ($(grep -c 'submitted with SLURM jobid' results/demo-slurm.log) sbatch jobs)"

# Last, so that pytest's summary closes the output.
STEPSCOPE_SLURM_OPTIONS="${slurm_options[*]}" .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
