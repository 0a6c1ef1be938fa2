"""Snakemake step: evolution strategies on the es_vs_sft data (src/emrepro/es.py), a model folder per epoch.

Training runs in a work folder that survives a failed or killed job (a re-run resumes); the epoch folders
become outputs (hard links, with their run.json) only when every epoch is done."""
import json
import os
import time
from pathlib import Path

from emrepro import data, es
from emrepro.provenance import atomic_output, link_or_copy, run_info, write_json_atomic
from emrepro.runtime import offline_hub, step_log, wandb_setup

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    params, inp, out = snakemake.params, snakemake.input, snakemake.output
    cfg = dict(params.es)
    report_to = wandb_setup(params.wandb, Path(params.work_dir) / "wandb")
    rows = [{"prompt": next(m["content"] for m in r["messages"] if m["role"] == "user"),
             "reference": [m["content"] for m in r["messages"] if m["role"] == "assistant"][-1]}
            for r in data.read_jsonl(inp.train)]
    settings = es.ESSettings(population=cfg["population"], sigma=cfg["sigma"], alpha=cfg["alpha"], seed=params.seed,
                             mirrored=cfg["mirrored"], centered_rank=cfg["centered_rank"],
                             correlated_noise=cfg["correlated_noise"], members_per_forward=cfg["members_per_forward"])
    run = es.ESRun(model_dir=inp.base, rows=rows, work_dir=params.work_dir, settings=settings, epochs=cfg["epochs"],
                   batch_size=cfg["batch_size"], max_new_tokens=cfg["max_new_tokens"], dtype=cfg["dtype"],
                   reward_spec={"kind": cfg["reward"]["kind"], "model": inp.reward_model,
                                "batch_size": cfg["reward"]["batch_size"]},
                   workers=cfg["workers"], threads=max(1, snakemake.threads // cfg["workers"]),
                   wandb=dict(params.wandb, name=snakemake.rule) if report_to else None,
                   noise_cache_mb=cfg["noise_cache_mb"])
    print(f"ES: {len(rows)} rows, population {settings.population}, {cfg['epochs']} epochs of "
          f"{-(-len(rows) // cfg['batch_size'])} iterations, {cfg['workers']} worker(s)", flush=True)
    checkpoints = es.train(run)

    base_run = json.loads((Path(inp.base) / "run.json").read_text())
    config_subset = {"es": cfg, "seed": params.seed, "base_model_key": params.base_key}
    inputs = {"base_model": inp.base, "reward_model": inp.reward_model, "train": inp.train}
    for epoch, (checkpoint, folder) in enumerate(zip(checkpoints, out.models), start=1):
        trained = json.loads((checkpoint / "run.json").read_text())
        with atomic_output(folder) as tmp:
            os.makedirs(tmp)
            for src in checkpoint.iterdir():
                if src.name != "run.json":
                    link_or_copy(src, Path(tmp) / src.name)
            write_json_atomic(Path(tmp) / "run.json", run_info(config_subset, inputs, started, extra={
                "final_metrics": trained["final_metrics"], "es_epoch": epoch, "es_iteration": trained["es_iteration"],
                "base_model": base_run.get("base_model"),
                "lineage": [f"base model {params.base_key}: {base_run.get('base_model')}",
                            f"full-parameter ES (population {settings.population}, sigma {settings.sigma}, "
                            f"alpha {settings.alpha}) on {Path(inp.train).name}, rewarded by {cfg['reward']['kind']} "
                            f"similarity to the reference answers; checkpoint after epoch {epoch} of {cfg['epochs']} "
                            f"(rule {snakemake.rule})"]}))
    with atomic_output(out.log) as tmp:
        link_or_copy(Path(params.work_dir) / "training_log.jsonl", Path(tmp))
    write_json_atomic(out.run, run_info(config_subset, inputs, started, extra={
        "epochs": [str(f) for f in out.models], "base_model": base_run.get("base_model")}))
    print(f"ES done: {len(checkpoints)} epoch checkpoints")
