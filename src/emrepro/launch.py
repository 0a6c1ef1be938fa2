"""Run a training step (SFT or TRL GRPO) in this process, or in N processes under `accelerate launch`.

A Snakemake `script:` step cannot itself be started by `accelerate launch`, so for N > 1 the step script
writes the call's arguments to a JSON file and re-launches this module as `python -m accelerate.commands.launch
--num_processes N --config_file accelerate/<name>.yaml -m emrepro.launch ARGS.json` inside the same job
(one SLURM allocation with N GPUs). Every rank builds the same Trainer and trains its shard of each global
batch; rank 0 alone writes the model folder (atomically, with run.json) and the metrics file the parent
reads back. With one process (the default) the step calls the training function directly, as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .data import read_jsonl
from .provenance import run_info, write_json_atomic


def processes(recipe: dict) -> int:
    """How many training processes the recipe's `launch` block asks for (1 when absent)."""
    return int(recipe.get("launch", {}).get("processes", 1))


def accelerate_command(launch: dict, config_dir: str | Path, bf16: bool, args_file: str | Path,
                       python: str = sys.executable) -> list[str]:
    """The `accelerate launch` command line: process count and precision come from the recipe, which
    override the values written in the accelerate config (those only serve a launch by hand)."""
    config = Path(config_dir) / f"{launch.get('accelerate_config', 'zero2')}.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"launch.accelerate_config: no accelerate config {config}")
    return [python, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(processes({"launch": launch})), "--num_machines", "1",
            "--mixed_precision", "bf16" if bf16 else "no",
            "-m", "emrepro.launch", str(args_file)]


def load_whole_models() -> None:
    """After distributed training, on rank 0 alone: let from_pretrained build a whole model again. Under
    ZeRO-3, transformers would partition it across the ranks (deepspeed.zero.Init), a collective that the
    other, finished ranks never join."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def run_json_maker(provenance: dict):
    """`make_run_json(final_metrics)` for the training functions, from run_info's arguments without the
    final metrics (config_subset, inputs, started, extra), the form the step scripts pass to run_step."""
    def make_run_json(final):
        return run_info(provenance["config_subset"], provenance["inputs"], provenance["started"],
                        extra={**provenance.get("extra", {}), "final_metrics": final})
    return make_run_json


def run_step(step: str, kwargs: dict, row_files: dict[str, str | None], provenance: dict | None,
             config_dir: str | Path, threads: int = 1) -> dict:
    """Train `step` ("sft" or "grpo") under accelerate launch; return rank 0's final metrics.

    `kwargs` are the training function's JSON-able arguments; `row_files` maps its row-list arguments to
    JSONL files (None: no rows), which every rank reads itself. `provenance` holds run_info's arguments
    (config_subset, inputs, started, extra): rank 0 calls run_info with the final metrics added, so
    run.json is written inside the folder before it appears."""
    recipe = kwargs["recipe"]
    work = Path(kwargs["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    args_file = work / f"{step}_launch.json"
    result_file = work / f"{step}_final.json"
    result_file.unlink(missing_ok=True)  # a stale result must never stand in for this run's
    write_json_atomic(args_file, {"step": step, "kwargs": kwargs, "row_files": row_files, "provenance": provenance,
                                  "threads": threads, "result_file": str(result_file)})
    env = dict(os.environ)
    # the ranks import this same emrepro (a worktree on PYTHONPATH, or the installed package)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = accelerate_command(recipe["launch"], config_dir, bool(recipe.get("bf16")), args_file)
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)
    return json.loads(result_file.read_text())


def _main(args_file: str) -> None:
    spec = json.loads(Path(args_file).read_text())
    from .runtime import set_threads

    # the job's cores are shared by its ranks (matters on CPU; on GPU each rank needs few threads)
    set_threads(max(1, spec["threads"] // int(os.environ.get("WORLD_SIZE", "1"))))
    make_run_json = run_json_maker(spec["provenance"]) if spec["provenance"] is not None else None
    if spec["step"] == "sft":
        from .sft import train_sft as train
    elif spec["step"] == "grpo":
        from .grpo import train_grpo_trl as train
    else:
        raise ValueError(f"unknown step {spec['step']!r}")
    rows = {name: read_jsonl(path) if path else [] for name, path in spec["row_files"].items()}
    final = train(**spec["kwargs"], **rows, make_run_json=make_run_json)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(spec["result_file"], final)


if __name__ == "__main__":
    _main(sys.argv[1])
