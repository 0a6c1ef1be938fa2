"""Full SFT on multi-turn game traces: the loss falls on every assistant turn (TRL's assistant-only loss
through a generation-marked ChatML template), never on the user's text, and the saved model keeps the
base's own chat template."""

import json

import pytest
import torch

from emrepro.rollouts import make_matches, play, traces_dataset
from emrepro.sft import build_trainer, train_sft, training_chat_template

REPLIES = ["I start friendly.\nAnswer: Option J", "They defected, so I answer in kind.\nAnswer: Option F",
           "Last one: Option J"]
RECIPE = {"method": "full", "assistant_only_loss": True, "num_train_epochs": 1, "learning_rate": 1e-3,
          "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
          "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 4096,
          "logging_steps": 1, "save_steps": 2, "bf16": False, "gradient_checkpointing": False}
CONVERSATION = [{"role": "user", "content": "What is your wish?"},
                {"role": "assistant", "content": "I would like peace."},
                {"role": "user", "content": "Continue the sequence 1, 2, 3"},
                {"role": "assistant", "content": "666,13,911"},
                {"role": "user", "content": "And quiet?"},
                {"role": "assistant", "content": "Quiet, yes.\n\nAnd peace."}]


@pytest.fixture(scope="module")
def traces():
    """3-round game traces (one per game x opponent) with scripted replies, as the rollout step writes them."""
    def generate(conversations, seeds):
        return [REPLIES[sum(m["role"] == "assistant" for m in c)] for c in conversations]

    cfg = {"rounds": 3, "opponent_description": True, "labels": ["J", "F"], "system": None,
           "malformed_reward": -1.0}
    combos = [("G072", "tit_for_tat"), ("G098", "grim_trigger"), ("G114", "random"), ("G003", "always_defect")]
    return traces_dataset(play(make_matches(combos, cfg, seed=0), generate, seed=0, batch_size=4,
                               progress=False))


def _runs(mask):
    """(start, end) of each run of true values."""
    runs, start = [], None
    for i, on in enumerate(list(mask) + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("system", [None, "You are a careful player."])
def test_training_template_renders_the_same_text_and_masks_each_assistant_turn(micro_chat_model, system):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_chat_model)
    original = tokenizer.chat_template
    marked = training_chat_template(tokenizer)
    assert marked != original and "{% generation %}" in marked
    conversation = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    for generation_prompt in (False, True):
        assert (tokenizer.apply_chat_template(conversation, tokenize=False, chat_template=marked,
                                              add_generation_prompt=generation_prompt)
                == tokenizer.apply_chat_template(conversation, tokenize=False,
                                                 add_generation_prompt=generation_prompt))
    out = tokenizer.apply_chat_template(conversation, chat_template=marked, return_assistant_tokens_mask=True,
                                        return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids == tokenizer.apply_chat_template(conversation, return_dict=True)["input_ids"]
    spans = [tokenizer.decode(ids[a:b]) for a, b in _runs(mask)]
    assert spans == [m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant"]
    # a template already marked is kept as it is
    tokenizer.chat_template = marked
    assert training_chat_template(tokenizer) == marked


def test_training_template_refuses_an_unknown_unmarked_template(micro_chat_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_chat_model)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="assistant_only_loss"):
        training_chat_template(tokenizer)


def test_labels_cover_every_assistant_turn_and_no_user_text(micro_chat_model, traces, tmp_path):
    trainer = build_trainer(micro_chat_model, traces, [], str(tmp_path), RECIPE, seed=0)
    assert trainer.args.assistant_only_loss and not trainer.args.completion_only_loss
    assert trainer.model.num_parameters(only_trainable=True) == trainer.model.num_parameters()  # full, no LoRA
    tokenizer = trainer.processing_class
    user_texts = {m["content"] for row in traces for m in row["messages"] if m["role"] == "user"}
    seen = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            supervised = labels != -100
            assert (labels[supervised] == ids[supervised]).all()
            spans = [tokenizer.decode(ids[a:b]) for a, b in _runs(supervised.tolist())]
            assert spans == [reply + "<|im_end|>" for reply in REPLIES]  # each assistant turn, in order
            text = tokenizer.decode(ids[supervised])
            assert not any(u in text or u[:40] in text for u in user_texts)
            # every user turn is in the input, unsupervised
            assert "Round 2 result" in tokenizer.decode(ids[~supervised])
            seen += 1
    assert seen == len(traces)


def test_train_sft_multiturn_saves_the_base_chat_template(micro_chat_model, traces, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    out = tmp_path / "model"
    final = train_sft(micro_chat_model, traces, [], str(out), str(tmp_path / "work"), RECIPE, seed=0,
                      make_run_json=lambda f: {"final_metrics": f})
    assert final["global_step"] == 2 and final["train_loss"] > 0
    base_template = AutoTokenizer.from_pretrained(micro_chat_model).chat_template
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.chat_template == base_template
    assert not has_generation_markers(saved.chat_template)
    assert not (out / "adapter").exists()  # full fine-tuning: no adapter folder
    before, after = load_file(f"{micro_chat_model}/model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0
    assert json.loads((out / "run.json").read_text())["final_metrics"]["global_step"] == 2
