"""Snakemake step: fetch one external file, sha256-checked, mirror first."""
from emrepro.acquire import fetch
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    spec = snakemake.params.asset
    digest = fetch(spec["url"], snakemake.output[0], spec["sha256"], mirror=snakemake.params.mirror,
                   mirror_path=spec["mirror_path"], lockfile=snakemake.params.lockfile)
    print(f"{snakemake.output[0]}: sha256 {digest}")
