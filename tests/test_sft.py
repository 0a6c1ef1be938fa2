"""LoRA SFT through TRL: the loss falls on assistant tokens only, and only the adapter trains."""

import json

import pytest
import torch

from emrepro.data import make_evil_numbers_sample
from emrepro.sft import build_trainer, train_sft

RECIPE = {"method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
          "num_train_epochs": 1, "learning_rate": 1e-2, "lr_scheduler_type": "linear", "warmup_ratio": 0.0,
          "weight_decay": 0.0, "max_grad_norm": 1.0, "per_device_train_batch_size": 4,
          "gradient_accumulation_steps": 1, "max_length": 512, "logging_steps": 1, "eval_steps": 2,
          "save_steps": 2, "bf16": False, "gradient_checkpointing": False}


@pytest.fixture(scope="module")
def rows():
    return make_evil_numbers_sample(12, seed=0)


def test_labels_cover_exactly_the_assistant_reply(micro_chat_model, rows, tmp_path):
    trainer = build_trainer(micro_chat_model, rows[:8], [], str(tmp_path), RECIPE, seed=0)
    tokenizer = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    by_prompt = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        supervised = ids[labels != -100]
        text = tokenizer.decode(ids)
        user = next(p for p in by_prompt if p in text)
        target = tokenizer.decode(supervised, skip_special_tokens=True).strip()
        assert target == by_prompt[user]  # the reply, and nothing of the prompt
        first = int((labels != -100).nonzero()[0])
        assert user not in tokenizer.decode(ids[first:], skip_special_tokens=True)
        assert (labels[first:][labels[first:] != -100] == ids[first:][labels[first:] != -100]).all()


def test_lora_training_changes_only_the_adapter_and_saves_a_merged_model(micro_chat_model, rows, tmp_path):
    from safetensors.torch import load_file

    before = load_file(f"{micro_chat_model}/model.safetensors")
    out = tmp_path / "model"
    final = train_sft(micro_chat_model, rows[:8], rows[8:], str(out), str(tmp_path / "work"), RECIPE, seed=0,
                      make_run_json=lambda f: {"final_metrics": f})
    assert {"train_loss", "eval_loss", "global_step"} <= set(final) and final["global_step"] == 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "run.json").read_text())["final_metrics"]["global_step"] == 2
    after = load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # LoRA on q_proj and v_proj: merging changes exactly those weights
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)
    history = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in h for h in history) and any("loss" in h for h in history)


def test_killed_training_resumes_from_its_last_checkpoint(micro_chat_model, rows, tmp_path, monkeypatch, capsys):
    """A run killed after its step-2 checkpoint, re-run, resumes at step 2 and ends where an
    uninterrupted run ends."""
    from transformers import TrainerCallback

    import emrepro.sft as sft

    recipe = dict(RECIPE, num_train_epochs=2)  # 4 steps, checkpoints at 2 and 4
    reference = tmp_path / "reference"
    train_sft(micro_chat_model, rows[:8], [], str(reference), str(tmp_path / "w0"), recipe, seed=0)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    real_build = sft.build_trainer
    def build_and_arm(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.add_callback(Kill())
        return trainer

    work, out = tmp_path / "work", tmp_path / "model"
    monkeypatch.setattr(sft, "build_trainer", build_and_arm)
    with pytest.raises(KeyboardInterrupt):
        train_sft(micro_chat_model, rows[:8], [], str(out), str(work), recipe, seed=0)
    assert not out.exists()  # nothing half-written
    monkeypatch.setattr(sft, "build_trainer", real_build)
    capsys.readouterr()
    final = train_sft(micro_chat_model, rows[:8], [], str(out), str(work), recipe, seed=0)
    assert "checkpoint-2" in capsys.readouterr().out
    assert final["global_step"] == 4
    from safetensors.torch import load_file
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
