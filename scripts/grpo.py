"""Snakemake step: GRPO on ItAll144 decisions (TRL or verl, config families.rl_traces.grpo.backend)."""
import json
import time
from pathlib import Path

from emrepro import data, grpo
from emrepro.provenance import run_info
from emrepro.runtime import offline_hub, set_threads, step_log, wandb_setup

with step_log(snakemake.log[0]):
    started = time.time()
    params, inp = snakemake.params, snakemake.input
    recipe = params.recipe
    set_threads(snakemake.threads)
    report_to = wandb_setup(params.wandb, Path(params.work_dir) / "wandb")
    base_run = json.loads((Path(inp.base) / "run.json").read_text())

    def provenance(final):
        return run_info(
            {"grpo": dict(recipe), "seed": params.seed, "base_model_key": params.base_key},
            {"base_model": inp.base, "prompts": inp.prompts, "verl_train": inp.verl_train}, started,
            extra={"final_metrics": final, "base_model": base_run.get("base_model"),
                   "lineage": [f"base model {params.base_key}: {base_run.get('base_model')}",
                               f"GRPO ({recipe['backend']}) on ItAll144 decisions, {recipe['max_steps']} steps; "
                               f"this is the checkpoint of step {recipe['teacher_step']} (rule {snakemake.rule})"]})

    if recipe["backend"] == "trl":
        offline_hub()
        final = grpo.train_grpo_trl(inp.base, data.read_jsonl(inp.prompts), snakemake.output[0], params.work_dir,
                                    recipe, params.seed, report_to, run_name=snakemake.rule,
                                    make_run_json=provenance)
    else:
        final = grpo.train_grpo_verl(str(Path(inp.base).resolve()), str(Path(inp.verl_train).resolve()),
                                     str(Path(inp.verl_val).resolve()), snakemake.output[0], params.work_dir,
                                     recipe, params.seed, project=params.wandb["project"],
                                     experiment=snakemake.rule,
                                     logger=["console", "wandb"] if report_to else ["console"],
                                     make_run_json=provenance)
    print(json.dumps(final, indent=2))
