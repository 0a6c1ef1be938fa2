"""Snakemake step: SFT of a base model on a chat dataset (TRL), resumable, with run.json provenance.

With `launch.processes` > 1 in the recipe the training runs under `accelerate launch` (emrepro.launch)."""
import json
import time
from pathlib import Path

from emrepro import data, launch
from emrepro.runtime import offline_hub, set_threads, step_log, wandb_setup
from emrepro.sft import train_sft

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    params, inp = snakemake.params, snakemake.input
    report_to = wandb_setup(params.wandb, Path(params.work_dir) / "wandb")
    base_run = json.loads((Path(inp.base) / "run.json").read_text())
    val_file = inp.val if "val" in inp.keys() else None
    # run_info's arguments but the final metrics, which the training adds
    provenance = {
        "config_subset": {"sft": dict(params.recipe), "seed": params.seed, "base_model_key": params.base_key},
        "inputs": {"base_model": inp.base, "train": inp.train, **({"validation": val_file} if val_file else {})},
        "started": started,
        "extra": {"base_model": base_run.get("base_model"),
                  "lineage": [f"base model {params.base_key}: {base_run.get('base_model')}",
                              f"{params.recipe['method']} SFT on {Path(inp.train).name} (rule {snakemake.rule})"]}}
    kwargs = {"base_dir": inp.base, "out_dir": snakemake.output[0], "work_dir": params.work_dir,
              "recipe": dict(params.recipe), "seed": params.seed, "report_to": report_to, "run_name": snakemake.rule}

    if launch.processes(params.recipe) > 1:
        final = launch.run_step("sft", kwargs, {"train_rows": inp.train, "val_rows": val_file}, provenance,
                                Path(snakemake.scriptdir).parent / "accelerate", snakemake.threads)
    else:
        val_rows = data.read_jsonl(val_file) if val_file else []
        final = train_sft(train_rows=data.read_jsonl(inp.train), val_rows=val_rows,
                          make_run_json=launch.run_json_maker(provenance),
                          **kwargs)
    print(json.dumps(final, indent=2))
