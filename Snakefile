# Reproduce emergent-misalignment experiments from raw inputs to figures and model cards.
#   snakemake --cores all                          # default scale: tiny (SmolLM2-135M-Instruct, CPU)
#   snakemake --cores all --config scale=test      # plumbing check in minutes
#   snakemake -n --config scale=paper              # plan the published runs
#   snakemake --cores all paper                    # figures, tables, manifest from results on disk
# Outputs: results/<scale>/. Configuration: config.yaml (validated before any job starts).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/sft.smk"
include: "rules/rl.smk"
include: "rules/es.smk"
include: "rules/teacher_swap.smk"
include: "rules/eval.smk"
include: "rules/report.smk"
include: "rules/hub.smk"
include: "rules/paper.smk"


rule all:
    input:
        evil_numbers_outputs(),
        rl_traces_outputs(),
        es_vs_sft_outputs(),
        teacher_swap_outputs(),
        paper_outputs(),


rule evil_numbers:
    input:
        evil_numbers_outputs(),


rule rl_traces:
    input:
        rl_traces_outputs(),


rule es_vs_sft:
    input:
        es_vs_sft_outputs(),


rule teacher_swap:
    input:
        teacher_swap_outputs(),


rule paper:
    input:
        paper_outputs(),
