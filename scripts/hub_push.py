"""Snakemake step: push a model-card folder to the Hugging Face hub (HF_TOKEN from the environment)."""
from emrepro import hub
from emrepro.provenance import write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    p, wc = snakemake.params, snakemake.wildcards
    if not p.namespace:
        raise ValueError("hub.push is true but config key 'hub.namespace' is not set")
    repo = hub.repo_id(p.namespace, wc.family, wc.label, p.scale)
    result = hub.push_folder(snakemake.input[0], repo, private=p.private)
    write_json_atomic(snakemake.output[0], {"repo_id": repo, "result": result})
