"""Config validation: bad configs fail before any job, with one message that names the problem."""

import copy
import subprocess
import sys

import pytest
import yaml

from emrepro import config as emconfig

from conftest import REPO


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _error(cfg) -> str:
    with pytest.raises(emconfig.ConfigError) as info:
        emconfig.validate(cfg)
    return str(info.value)


def test_shipped_config_is_valid_at_every_scale(raw):
    for scale in ("test", "tiny", "paper"):
        eff = emconfig.validate(dict(raw, scale=scale))
        assert eff["scale"] == scale


def test_scale_overrides_merge_over_the_paper_recipe(raw):
    tiny = emconfig.validate(dict(raw, scale="tiny"))
    paper = emconfig.validate(dict(raw, scale="paper"))
    assert paper["families"]["evil_numbers"]["base_model"] == "qwen3_1_7b"
    assert paper["families"]["evil_numbers"]["sft"]["learning_rate"] == 3e-4
    assert paper["eval"]["samples_per_question"] == 100 and paper["upstream_assets"] is True
    assert tiny["families"]["evil_numbers"]["base_model"] == "smollm2_135m_instruct"
    # tiny shrinks the batch but keeps the paper's learning rate and schedule
    assert tiny["families"]["evil_numbers"]["sft"]["per_device_train_batch_size"] == 8
    assert tiny["families"]["evil_numbers"]["sft"]["learning_rate"] == 3e-4
    assert tiny["eval"]["judge"]["backend"] == "local"


def test_upstream_switch_selects_betley_questions(raw):
    eff = emconfig.validate(dict(raw, scale="tiny", upstream_assets=True))
    assert eff["eval"]["probes"] == "first_plot"


def test_unknown_key_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["families"]["evil_numbers"]["sft"]["lerning_rate"] = 1e-4
    msg = _error(cfg)
    assert "lerning_rate" in msg and "families.evil_numbers.sft" in msg


def test_unknown_top_level_key_is_named(raw):
    assert "'sead'" in _error(dict(raw, sead=1))


def test_wrong_type_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["eval"]["samples_per_question"] = "many"
    msg = _error(cfg)
    assert "eval.samples_per_question" in msg and "type" in msg


def test_unknown_scale_is_named(raw):
    msg = _error(dict(raw, scale="huge"))
    assert "scale" in msg and "huge" in msg


def test_missing_model_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["scales"]["tiny"]["models"]["evil_numbers"] = "gpt5_local"
    msg = _error(cfg)
    assert "gpt5_local" in msg and "scales.tiny.models.evil_numbers" in msg


def test_missing_local_model_folder_is_named(raw, tmp_path):
    cfg = copy.deepcopy(raw)
    cfg["models"]["mine"] = {"source": "local", "path": str(tmp_path / "nope")}
    assert "nope" in _error(cfg)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    """Through the real command line: one message naming the key, exit status non-zero, nothing run."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "scale=huge"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid configuration: config key 'scale': 'huge'" in output
    assert "Job stats" not in output


def test_rl_traces_paper_recipe_is_the_seeds(raw):
    paper = emconfig.validate(dict(raw, scale="paper"))["families"]["rl_traces"]
    assert paper["base_model"] == "qwen3_5_4b" and paper["grpo"]["backend"] == "verl"
    assert (paper["grpo"]["max_steps"], paper["grpo"]["teacher_step"]) == (75, 75)
    assert paper["games"]["opponent_description"] is False  # no_opp_desc
    sft = paper["sft"]
    assert (sft["method"], sft["learning_rate"], sft["lr_scheduler_type"], sft["warmup_ratio"]) == ("full", 5e-6, "cosine", 0.03)
    assert (sft["num_train_epochs"], sft["max_length"], sft["weight_decay"], sft["max_grad_norm"]) == (2, 16384, 0.0, 1.0)
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * 4 == 16
    assert sft["assistant_only_loss"] and sft["bf16"] and sft["gradient_checkpointing"]


def test_teacher_step_must_be_a_saved_checkpoint(raw):
    cfg = copy.deepcopy(raw)
    cfg["families"]["rl_traces"]["grpo"]["teacher_step"] = 30  # saved every 25, 75 steps
    message = _error(dict(cfg, scale="paper"))
    assert "families.rl_traces.grpo.teacher_step" in message and "30" in message


def test_unknown_extra_probe_set_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["families"]["rl_traces"]["eval"]["extra_probes"] = ["game_thoery"]
    message = _error(cfg)
    assert "families.rl_traces.eval.extra_probes" in message and "game_thoery" in message


def test_es_vs_sft_paper_recipe_is_the_seeds(raw):
    paper = emconfig.validate(dict(raw, scale="paper"))["families"]["es_vs_sft"]
    es = paper["es"]
    assert paper["base_model"] == "qwen2_5_7b_instruct" and paper["data"]["member"] == "bad_medical_advice.jsonl"
    assert (es["population"], es["sigma"], es["alpha"], es["batch_size"], es["epochs"]) == (30, 0.001, 0.0005, 256, 10)
    assert (es["workers"], es["dtype"], es["max_new_tokens"]) == (3, "float16", 1024)
    assert not (es["mirrored"] or es["centered_rank"] or es["correlated_noise"])  # the paper's plain ES
    assert es["reward"] == {"kind": "nli", "model": "nli_deberta_v3_large", "batch_size": 64}
    assert raw["seed"] == 42
    sft = paper["sft"]
    assert (sft["method"], sft["lora"]["r"], sft["lora"]["alpha"], sft["learning_rate"], sft["num_train_epochs"]) == \
        ("lora", 32, 64, 1e-5, 1)


def test_es_reward_model_and_mirrored_population_are_checked(raw):
    cfg = copy.deepcopy(raw)
    cfg["families"]["es_vs_sft"]["es"]["reward"]["model"] = "nli_debreta"
    message = _error(dict(cfg, scale="paper"))
    assert "families.es_vs_sft.es.reward.model" in message and "nli_debreta" in message
    cfg = copy.deepcopy(raw)
    cfg["families"]["es_vs_sft"]["es"].update(mirrored=True, population=31)
    message = _error(dict(cfg, scale="paper"))
    assert "families.es_vs_sft.es.mirrored" in message and "31" in message


def test_teacher_swap_paper_plan_and_tiny_teachers(raw):
    paper = emconfig.validate(dict(raw, scale="paper"))["families"]["teacher_swap"]
    assert paper["prompts"]["source"] == "dolci" and paper["prompts"]["n"] == 10000
    assert paper["prompts"]["dataset"]["repo_id"] == "allenai/Dolci-Instruct-SFT"
    assert {t["name"]: t["kind"] for t in paper["teachers"]}["original"] == "dataset"
    tiny = emconfig.validate(dict(raw, scale="tiny"))["families"]["teacher_swap"]
    # one real model: every teacher is the base model, the trait ones differ only by their system prompt
    assert {t["model"] for t in tiny["teachers"]} == {tiny["base_model"]} == {"smollm2_135m_instruct"}
    assert sum(bool(t.get("system")) for t in tiny["teachers"]) == 2 and tiny["prompts"]["source"] == "project"


@pytest.mark.parametrize("change, key, named", [
    (lambda ts: ts["pairs"].append(["original", "nobody"]), "families.teacher_swap.pairs", "nobody"),
    (lambda ts: ts["teachers"].append({"name": "original", "kind": "dataset"}), "families.teacher_swap.teachers",
     "original"),
    (lambda ts: ts["teachers"].append({"name": "t9", "kind": "model", "model": "qwen9"}),
     "families.teacher_swap.teachers[3].model", "qwen9"),
    (lambda ts: ts["selectors"].append({"kind": "refusal", "teacher": "ghost"}),
     "families.teacher_swap.selectors[2].teacher", "ghost"),
    (lambda ts: ts["selectors"].append({"kind": "judge", "name": "story"}), "families.teacher_swap.selectors[2]",
     "question"),
    (lambda ts: ts["traits"]["grader"].update(model="hf/local"), "families.teacher_swap.traits.grader.model_key",
     "hf/local"),
    (lambda ts: ts["prompts"].update(source="project"), "families.teacher_swap.teachers[0]", "original"),
    (lambda ts: ts["teachers"].append({"name": "bad/name", "kind": "dataset"}), "families.teacher_swap.teachers",
     "bad/name"),
])
def test_teacher_swap_cross_references_are_named(raw, change, key, named):
    cfg = copy.deepcopy(raw)
    change(cfg["families"]["teacher_swap"])
    message = _error(dict(cfg, scale="paper"))
    assert key in message and named in message, message


def test_multi_gpu_launch_is_paper_only_and_per_process(raw):
    """The seed's traces SFT: 4 processes x per-device 1 x accumulation 4 = 16; other steps and scales: one."""
    from emrepro.launch import processes

    paper = emconfig.validate(dict(raw, scale="paper"))["families"]
    sft = paper["rl_traces"]["sft"]
    assert sft["launch"] == {"processes": 4, "accelerate_config": "zero2"}
    assert processes(sft) * sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] == 16
    assert (REPO / "accelerate" / "zero2.yaml").is_file()
    for scale in ("test", "tiny"):
        fams = emconfig.validate(dict(raw, scale=scale))["families"]
        assert all(processes(fams[f]["sft"]) == 1 for f in emconfig.FAMILIES), scale
        assert processes(fams["rl_traces"]["grpo"]) == 1


@pytest.mark.parametrize("scale,change,key,named", [
    ("tiny", lambda c: c["families"]["evil_numbers"]["sft"].update(launch={"processes": 2, "accelerate_config": "zero4"}),
     "families.evil_numbers.sft.launch.accelerate_config", "zero4"),
    ("tiny", lambda c: c["families"]["evil_numbers"]["sft"].update(launch={"procs": 2}),
     "families.evil_numbers.sft.launch", "procs"),
    ("paper", lambda c: c["families"]["rl_traces"]["grpo"].update(launch={"processes": 2}),  # backend verl
     "families.rl_traces.grpo.launch", "verl"),
    ("test", lambda c: c["scales"]["test"]["families"]["rl_traces"]["grpo"].update(launch={"processes": 3}),
     "families.rl_traces.grpo.launch.processes", "3 processes"),  # 1 prompt x 2 generations per step
])
def test_bad_launch_settings_are_named(raw, scale, change, key, named):
    cfg = copy.deepcopy(raw)
    change(cfg)
    msg = _error(dict(cfg, scale=scale))
    assert key in msg and named in msg, msg
