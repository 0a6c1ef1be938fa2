"""Snakemake step: the results manifest (which report rule, models and data are behind each figure and table)."""
from emrepro.paper import manifest
from emrepro.provenance import write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    result = manifest(snakemake.params.families, snakemake.params.scale)
    write_json_atomic(snakemake.output.manifest, result)
    for fam, entry in result["families"].items():
        print(f"{fam}: rule {entry['report_rule']}, {len(entry['models'])} models, {len(entry['data'])} data files")
