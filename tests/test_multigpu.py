"""Multi-process training through the real launch path: `accelerate launch` with the project's DeepSpeed
ZeRO-2 config, two CPU processes (gloo), against the single-process step with the same global batch."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from emrepro import config as emconfig
from emrepro import launch
from emrepro.data import make_evil_numbers_sample, write_jsonl
from emrepro.sft import train_sft

from conftest import REPO

pytest.importorskip("deepspeed")

ROWS = 16   # 4 global batches of 4 per epoch
EPOCHS = 2  # the second epoch reshuffles: both runs must draw the same new order


def history(model_dir: Path) -> list[dict]:
    """The per-step training records (logging_steps 1), without the summary and eval records."""
    lines = (model_dir / "training_log.jsonl").read_text().splitlines()
    return [h for h in map(json.loads, lines) if "loss" in h]


def test_two_zero2_processes_train_like_one_process_with_the_same_global_batch(micro_chat_model, tmp_path):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    # The test-scale full-parameter SFT recipe, with a larger learning rate so that the weights, and with
    # them the later losses, move far from where a wrong step would leave them, and a max_length that keeps
    # every row (TRL drops rows whose reply is truncated away). Every global batch must be full: accelerate
    # fills a last, short batch of a multi-process run with rows from the start of the data (even_batches),
    # so that batch would differ from the single run's by design.
    recipe = dict(emconfig.validate(dict(raw, scale="test"))["families"]["teacher_swap"]["sft"],
                  learning_rate=1e-3, num_train_epochs=EPOCHS, logging_steps=1, save_steps=100, max_length=256)
    assert recipe["method"] == "full" and recipe["per_device_train_batch_size"] == 4
    rows = make_evil_numbers_sample(ROWS, seed=0)
    write_jsonl(tmp_path / "train.jsonl", rows)

    one = tmp_path / "one"
    train_sft(micro_chat_model, rows, [], str(one), str(tmp_path / "w1"), recipe, seed=0)

    # 2 processes x 2 rows = the same global batch of 4; accelerate hands consecutive per-device batches
    # of the (seeded) sampler to the ranks in turn, so global batch k is the same 4 rows as in the single run
    two = tmp_path / "two"
    launched = dict(recipe, per_device_train_batch_size=2, launch={"processes": 2, "accelerate_config": "zero2"})
    kwargs = {"base_dir": micro_chat_model, "out_dir": str(two), "work_dir": str(tmp_path / "w2"),
              "recipe": launched, "seed": 0, "report_to": [], "run_name": "sft"}
    provenance = {"config_subset": {"sft": launched}, "inputs": {"train": str(tmp_path / "train.jsonl")},
                  "started": 0.0, "extra": {}}
    final = launch.run_step("sft", kwargs, {"train_rows": str(tmp_path / "train.jsonl"), "val_rows": None},
                            provenance, REPO / "accelerate", threads=2)

    # it really ran as DeepSpeed ZeRO with two ranks: each rank saved its own optimizer-state shard
    shards = sorted(p.name for p in (tmp_path / "w2" / "checkpoints").glob("checkpoint-*/global_step*/*optim_states*"))
    assert any("rank_0" in s for s in shards) and any("rank_1" in s for s in shards), shards
    # rank 0 alone wrote the folder, with run.json and the same final metrics it returned
    assert json.loads((two / "run.json").read_text())["final_metrics"] == final
    assert not list(tmp_path.glob(".two.tmp-*"))

    h1, h2 = history(one), history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, EPOCHS * ROWS // 4 + 1))
    # Same rows in every global batch: TRL logs the running count of real (unpadded) tokens, gathered over
    # the ranks. Two ranks reading the same shard, or shards of different batches, change these integers.
    assert [h["num_tokens"] for h in h2] == [h["num_tokens"] for h in h1]
    # Same losses and gradient norms, step by step. Both runs are fp32 on CPU; they differ only in the order
    # of floating-point sums (two half-batch forwards and a gloo all-reduce vs one batch) and in padding
    # length: measured here at most 1.4e-6 relative over 8 steps. 1e-5 allows for other BLAS builds, while
    # the faults this guards against move values by 1e-3 and more: a loss not averaged over the ranks (one
    # rank's half-batch loss, or a mean of per-rank token means), a gradient not averaged (grad_norm x2), a
    # step that saw other rows.
    for key in ("loss", "grad_norm", "mean_token_accuracy"):
        a, b = [h[key] for h in h1], [h[key] for h in h2]
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), key
    # the comparison is informative: the loss moves by far more than the tolerance from step to step
    losses = [h["loss"] for h in h1]
    assert min(abs(x - y) for x, y in zip(losses, losses[1:])) > 50 * 1e-5 * losses[0], losses
    assert final["global_step"] == EPOCHS * ROWS // 4


def test_trl_grpo_runs_under_the_same_launch_and_rank_0_saves_the_teacher_step(micro_chat_model, tmp_path):
    """GRPO's completions are sampled per rank, so its curves are not compared; this checks the launch path:
    the step's completions split over two ZeRO-2 ranks, and rank 0 writes the teacher checkpoint's weights.
    (The random micro model's replies all score alike, so its weights hardly move: the SFT test above is
    the one about training equivalence.)"""
    from safetensors.torch import load_file

    from emrepro.games import combinations, decision_rows

    rows = decision_rows(combinations(), n_rounds=2, n_rows=8, seed=0, with_opp_desc=False)
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    recipe = {"max_steps": 2, "save_steps": 1, "teacher_step": 1, "prompts_per_step": 1, "num_generations": 2,
              "max_completion_length": 8, "temperature": 1.0, "kl_coef": 0.0, "learning_rate": 1e-3,
              "enable_thinking": False, "bf16": False, "gradient_checkpointing": False, "logging_steps": 1,
              "launch": {"processes": 2, "accelerate_config": "zero2"}}
    out, work = tmp_path / "grpo", tmp_path / "work"
    kwargs = {"base_dir": micro_chat_model, "out_dir": str(out), "work_dir": str(work), "recipe": recipe,
              "seed": 0, "report_to": [], "run_name": "grpo"}
    final = launch.run_step("grpo", kwargs, {"rows": str(tmp_path / "prompts.jsonl")}, None, REPO / "accelerate",
                            threads=2)
    assert final["global_step"] == 2 and final["teacher_step"] == 1
    state = json.loads((work / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 1  # 1 prompt x 2 generations over 2 ranks: one completion each
    teacher = load_file(work / "checkpoints" / "checkpoint-1" / "model.safetensors")
    saved = load_file(out / "model.safetensors")
    # (the DeepSpeed checkpoint also lists the tied lm_head, which save_pretrained leaves out)
    assert saved.keys() <= teacher.keys() and all(torch.equal(saved[k], teacher[k]) for k in saved)
