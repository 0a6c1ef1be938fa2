"""Snakemake step: GRPO on ItAll144 decisions (TRL or verl, config families.rl_traces.grpo.backend).

TRL with `launch.processes` > 1 runs under `accelerate launch` (emrepro.launch); verl starts its own
workers, one per GPU of the job (the rule's `gpu` resource)."""
import json
import time
from pathlib import Path

from emrepro import data, grpo, launch
from emrepro.runtime import offline_hub, set_threads, step_log, wandb_setup

with step_log(snakemake.log[0]):
    started = time.time()
    params, inp = snakemake.params, snakemake.input
    recipe = params.recipe
    set_threads(snakemake.threads)
    report_to = wandb_setup(params.wandb, Path(params.work_dir) / "wandb")
    base_run = json.loads((Path(inp.base) / "run.json").read_text())
    # run_info's arguments but the final metrics, which the training adds
    provenance = {
        "config_subset": {"grpo": dict(recipe), "seed": params.seed, "base_model_key": params.base_key},
        "inputs": {"base_model": inp.base, "prompts": inp.prompts, "verl_train": inp.verl_train},
        "started": started,
        "extra": {"base_model": base_run.get("base_model"),
                  "lineage": [f"base model {params.base_key}: {base_run.get('base_model')}",
                              f"GRPO ({recipe['backend']}) on ItAll144 decisions, {recipe['max_steps']} steps; "
                              f"this is the checkpoint of step {recipe['teacher_step']} (rule {snakemake.rule})"]}}

    provenance_with = launch.run_json_maker(provenance)

    if recipe["backend"] == "trl":
        offline_hub()
        kwargs = {"base_dir": inp.base, "out_dir": snakemake.output[0], "work_dir": params.work_dir,
                  "recipe": dict(recipe), "seed": params.seed, "report_to": report_to, "run_name": snakemake.rule}
        if launch.processes(recipe) > 1:
            final = launch.run_step("grpo", kwargs, {"rows": inp.prompts}, provenance,
                                    Path(snakemake.scriptdir).parent / "accelerate", snakemake.threads)
        else:
            final = grpo.train_grpo_trl(rows=data.read_jsonl(inp.prompts), make_run_json=provenance_with, **kwargs)
    else:
        final = grpo.train_grpo_verl(str(Path(inp.base).resolve()), str(Path(inp.verl_train).resolve()),
                                     str(Path(inp.verl_val).resolve()), snakemake.output[0], params.work_dir,
                                     recipe, params.seed, project=params.wandb["project"],
                                     experiment=snakemake.rule,
                                     logger=["console", "wandb"] if report_to else ["console"],
                                     make_run_json=provenance_with,
                                     # every GPU the job was given (resources: gpu=, per node)
                                     n_gpus_per_node=snakemake.resources.gpu // recipe["verl"]["nnodes"])
    print(json.dumps(final, indent=2))
