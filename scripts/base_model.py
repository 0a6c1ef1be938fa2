"""Snakemake step: build or download a base model folder (with run.json)."""
from emrepro.models import build_base_model
from emrepro.runtime import set_threads, step_log

with step_log(snakemake.log[0]):
    set_threads(snakemake.threads)
    spec = dict(snakemake.params.spec)
    if spec["source"] == "micro":
        sizes = {k: spec.pop(k) for k in list(spec) if k not in ("source", "tokenizer_from", "seed")}
        spec.update(tokenizer_from=snakemake.input.tokenizer, sizes=sizes)
    build_base_model(spec, snakemake.output[0], mirror=snakemake.params.mirror, lockfile=snakemake.params.lockfile)
