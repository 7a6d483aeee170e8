#!/usr/bin/env bash
# The test command: lint, format checks, the demo DAG and its report, the same demo through a real
# single-node SLURM cluster (scripts/slurm_cluster.sh), the unit and workflow tests, then the SLURM
# tests (tests/test_slurm.py: every job went through sbatch, results equal the local run's,
# failure handling on the cluster).
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

# The same demo through SLURM (`--profile profiles/slurm`), in the background: its jobs wait on the
# scheduler much of the time, which the unit and workflow tests use meanwhile.
cluster=$(pwd)/.slurm
bash scripts/slurm_cluster.sh start "$cluster"
slurm_pid=
cleanup() {
    [ -n "$slurm_pid" ] && kill "$slurm_pid" 2>/dev/null || true
    bash scripts/slurm_cluster.sh stop "$cluster"
}
trap cleanup EXIT
export STEPSCOPE_SLURM_DIR=$cluster
export STEPSCOPE_SLURM_OPTIONS="--slurm-status-command squeue --slurm-init-seconds-before-status-checks 2
    --slurm-no-account --latency-wait 10"
rm -rf results/demo-slurm resources/demo-slurm logs/slurm
# shellcheck disable=SC2086  # the options are words
.venv/bin/snakemake --profile profiles/slurm --configfile config/demo.yaml \
    --config results=results/demo-slurm resources=resources/demo-slurm $STEPSCOPE_SLURM_OPTIONS \
    > results/demo-slurm.log 2>&1 &
slurm_pid=$!

tests_status=0
.venv/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_slurm.py "$@" || tests_status=$?

if ! wait "$slurm_pid"; then
    slurm_pid=
    tail -50 results/demo-slurm.log
    echo "demo through SLURM: FAILED (results/demo-slurm.log)"
    exit 1
fi
slurm_pid=
echo "demo through SLURM: ok ($(grep -c 'submitted with SLURM jobid' results/demo-slurm.log) sbatch jobs)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_slurm.py
[ "$tests_status" = 0 ] || { echo "unit and workflow tests failed (see above)"; exit "$tests_status"; }
