"""stepscope: step-wise analyses of video diffusion reasoning, from records to report.

snakemake --cores 2 --configfile config/demo.yaml     # tiny demo on a laptop
snakemake --profile profiles/slurm                    # the real experiment on a cluster
"""

from snakemake.utils import min_version

min_version("9.0")


# --configfile replaces the default config instead of being merged into it; --config alone
# overrides single keys of the default config.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


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
        final_targets,
