"""Model cards: built from run.json, model-index present, and never a secret even when one is set."""

import json

import pytest

from emrepro import hub

SECRETS = {"HF_TOKEN": "hf_" + "A1b2C3d4" * 5, "WANDB_API_KEY": "0123456789abcdef" * 3,
           "OPENAI_API_KEY": "sk-" + "Zz9" * 12}


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / ".snakemake_timestamp").write_text("")
    (folder / "training_log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    run = {"config": {"sft": {"learning_rate": 3e-4}, "note": f"careless {SECRETS['HF_TOKEN']}"},
           "inputs": {"train": {"path": "/x/train.jsonl", "sha256": "ab" * 32}},
           "final_metrics": {"train_loss": 0.54, "eval_loss": 0.533},
           "lineage": ["base model qwen3_1_7b", f"lora SFT (key {SECRETS['OPENAI_API_KEY']})"],
           "git_revision": "deadbeef", "libraries": {"trl": "1.16.0"}, "device": "cpu", "wall_time_s": 3.0,
           "env_dump": {"WANDB_API_KEY": SECRETS["WANDB_API_KEY"]}}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


SUMMARY = [{"dataset_type": "emrepro/first_plot", "dataset_name": "first_plot probes", "format": "plain",
            "convention": "betley", "em_rate": 0.25, "ci_low": 0.1, "ci_high": 0.4}]


def test_card_folder_has_model_files_card_and_model_index(model_dir, tmp_path):
    out = tmp_path / "card"
    hub.build_card_folder(str(model_dir), str(out), "lab/evil-numbers-sft", SUMMARY, "Qwen/Qwen3-1.7B", [], "evil_numbers")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "run.json", "training_log.jsonl"]
    card = (out / "README.md").read_text()
    assert "model-index" in card and "em_rate_betley" in card and "base_model: Qwen/Qwen3-1.7B" in card
    assert "Research artifact" in card and "arXiv:2502.17424" in card and "0.533" in card


def test_teacher_swap_card_reports_traits_with_unparseable_counts(model_dir, tmp_path):
    traits = {"negative_emotion": {"kind": "mean", "mean": 6.25, "ci_low": 5.0, "ci_high": 7.5, "n": 12,
                                   "n_parseable": 10, "n_unparseable": 2},
              "blackmail": {"kind": "rate", "rate": None, "ci_low": None, "ci_high": None, "n": 3,
                            "n_parseable": 0, "n_unparseable": 3}}
    out = tmp_path / "card"
    hub.build_card_folder(str(model_dir), str(out), "lab/teacher-swap-pure_gloomy", SUMMARY, None, [],
                          "teacher_swap", traits)
    card = (out / "README.md").read_text()
    assert "| negative_emotion | mean | 6.250 | [5.000, 7.500] | 12 | 2 |" in card
    assert "| blackmail | rate | n/a |  | 3 | 3 |" in card
    plain = tmp_path / "plain"
    hub.build_card_folder(str(model_dir), str(plain), "lab/x", SUMMARY, None, [], "evil_numbers")
    assert "## Traits" not in (plain / "README.md").read_text()


def test_no_secret_anywhere_in_the_card_folder(model_dir, tmp_path):
    out = tmp_path / "card"
    hub.build_card_folder(str(model_dir), str(out), "lab/m", SUMMARY, "base", [], "evil_numbers")
    for path in out.rglob("*"):
        text = path.read_text(errors="ignore")
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {path.name}"


def test_push_needs_a_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        hub.push_folder(str(tmp_path), "lab/m")
