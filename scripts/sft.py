"""Snakemake step: SFT of a base model on a chat dataset (TRL), resumable, with run.json provenance."""
import json
import time
from pathlib import Path

from emrepro import data
from emrepro.provenance import run_info
from emrepro.runtime import offline_hub, set_threads, step_log, wandb_setup
from emrepro.sft import train_sft

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    params, inp = snakemake.params, snakemake.input
    report_to = wandb_setup(params.wandb, Path(params.work_dir) / "wandb")
    base_run = json.loads((Path(inp.base) / "run.json").read_text())

    def provenance(final):
        return run_info(
            {"sft": dict(params.recipe), "seed": params.seed, "base_model_key": params.base_key},
            {"base_model": inp.base, "train": inp.train, **({"validation": inp.val} if "val" in inp.keys() else {})},
            started,
            extra={"final_metrics": final, "base_model": base_run.get("base_model"),
                   "lineage": [f"base model {params.base_key}: {base_run.get('base_model')}",
                               f"{params.recipe['method']} SFT on {Path(inp.train).name} (rule {snakemake.rule})"]})

    val_rows = data.read_jsonl(inp.val) if "val" in inp.keys() else []
    final = train_sft(inp.base, data.read_jsonl(inp.train), val_rows, snakemake.output[0],
                      params.work_dir, params.recipe, params.seed, report_to, run_name=snakemake.rule,
                      make_run_json=provenance)
    print(json.dumps(final, indent=2))
