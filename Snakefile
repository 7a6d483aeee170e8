"""stepscope: step-wise analyses of video diffusion reasoning, from records to report.

snakemake --cores 2 --configfile config/demo.yaml     # tiny demo on a laptop
snakemake --profile profiles/slurm                    # the real experiment on a cluster
"""

from snakemake.utils import min_version

min_version("9.0")


# --configfile replaces the default config instead of being merged into it.
if not config:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/bench.smk"
include: "rules/sample.smk"
include: "rules/decode.smk"
include: "rules/scoring.smk"
include: "rules/figures.smk"
include: "rules/probes_common.smk"
include: "rules/probes.smk"


rule all:
    default_target: True
    input:
        results("manifest.parquet"),
        [run_path(under(RUN_DIR, "meta.json"), **run) for run in all_runs()],
        [run_path(under(DECODED_DIR, "contact_sheet.png"), **run) for run in all_runs()],
        [final_video(**run) for run in all_runs()],
        results("tables/summary.csv"),
        [run_path(FIGURE_RUN_DIR, **run) for run in all_runs()],
        [
            run_path(FIGURE_GROUP_DIR, variant=v, split=s, task=t)
            for v, s, t in figure_groups()
        ],
        probe_targets(),
