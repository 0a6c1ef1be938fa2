"""The verl-facing pieces (grpo.verl_*, game_reward.compute_score) against verl's own files, for real.

verl is never installed or imported as a package here (it imports torch, ray, vLLM): a session fixture
downloads the wheel pinned in envs/rl.yaml (`pip download --no-deps`, cached in ~/.cache/emrepro/verl-wheel),
unzips it, and the tests load single stdlib-only files by path (verl/utils/import_utils.py), read its config
tree (_generated_ppo_trainer.yaml), run the argparse definition of its model merger, and check the source of
the reader/reward code for the keys our rows must carry.
"""

import argparse
import ast
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from emrepro import config, games, grpo
from emrepro.game_reward import DATA_SOURCE

VERL_WHEEL_CACHE = Path.home() / ".cache" / "emrepro" / "verl-wheel"
SRC = REPO / "src"


def verl_pin() -> str:
    pip = yaml.safe_load((REPO / "envs" / "rl.yaml").read_text())["dependencies"][-1]["pip"]
    return next(line.split("==", 1)[1].strip() for line in pip if line.startswith("verl=="))


@pytest.fixture(scope="session")
def verl_root(tmp_path_factory) -> Path:
    """verl's package folder from its unpacked wheel (downloaded once into the cache)."""
    version = verl_pin()
    wheels = sorted(VERL_WHEEL_CACHE.glob(f"verl-{version}-*.whl"))
    if not wheels:
        VERL_WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   f"verl=={version}", "-d", str(VERL_WHEEL_CACHE)],
                                  capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as error:
            pytest.skip(f"cannot download the verl=={version} wheel: {error}")
        wheels = sorted(VERL_WHEEL_CACHE.glob(f"verl-{version}-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot download the verl=={version} wheel (pip exit {proc.returncode}): {last}")
    out = tmp_path_factory.mktemp("verl-wheel")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(out)
    root = out / "verl"
    assert (root / "utils" / "import_utils.py").is_file(), f"{wheels[0].name} has no verl/utils/import_utils.py"
    return root


@pytest.fixture(scope="session")
def paper_recipe() -> dict:
    eff = config.load(REPO / "config.yaml", {"scale": "paper"})
    return {"recipe": eff["families"]["rl_traces"]["grpo"], "seed": eff.get("seed", 0)}


@pytest.fixture(scope="session")
def rows():
    """Decision rows over a spread of games and opponents, several rounds deep (multi-turn prompts)."""
    combos = games.combinations()[::37]
    rows = games.decision_rows(combos, n_rounds=5, n_rows=24, seed=3, with_opp_desc=False, malformed_reward=-0.5)
    assert any(r["round"] > 0 for r in rows) and any(r["round"] == 0 for r in rows)
    return rows


@pytest.fixture(scope="session")
def verl_parquet(rows, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verl-data") / "train.parquet"
    grpo.write_verl_parquet(rows, path, "train")
    return path


def _tree_get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _source(verl_root: Path, rel: str) -> str:
    path = verl_root / rel
    assert path.is_file(), f"verl {verl_pin()} has no {rel}"
    return path.read_text()


# --- a. the reward module, loaded and called exactly as verl does ----------------------------------------

LOADER = r"""
import importlib.util, json, sys
import_utils_path, reward_path, src_dir, cases_path = sys.argv[1:5]
before = {"emrepro_importable": importlib.util.find_spec("emrepro") is not None,
          "src_on_path": src_dir in sys.path}
spec = importlib.util.spec_from_file_location("verl_import_utils", import_utils_path)
import_utils = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_utils)
# verl.trainer.ppo.reward.get_custom_reward_fn: load_extern_object(module_path=path, object_name=name)
compute_score = import_utils.load_extern_object(module_path=reward_path, object_name="compute_score")
results = []
for case in json.load(open(cases_path)):
    # verl.experimental.reward_loop.reward_manager.naive.NaiveRewardManager.run_single's call
    results.append(compute_score(data_source=case["data_source"], solution_str=case["solution_str"],
                                 ground_truth=case["ground_truth"], extra_info=case["extra_info"]))
try:
    compute_score(data_source="openai/gsm8k", solution_str="Answer: Option J",
                  ground_truth=json.load(open(cases_path))[0]["ground_truth"], extra_info={})
    wrong_source = None
except Exception as error:
    wrong_source = type(error).__name__
print(json.dumps({"before": before, "results": results, "wrong_source": wrong_source,
                  "games_file": sys.modules["emrepro.games"].__file__,
                  "module_name": compute_score.__module__}))
"""


def test_reward_module_loads_and_scores_like_verl(verl_root, verl_parquet, rows, tmp_path):
    import datasets

    # verl's RLHFDataset reads the parquet with datasets.load_dataset("parquet", data_files=...)["train"]
    read = datasets.load_dataset("parquet", data_files=str(verl_parquet), cache_dir=str(tmp_path / "hf"))["train"]
    replies = {0: "Let me weigh both options.\nAnswer: Option J", 1: "Option J looks risky.\n\nAnswer: Option F",
               None: "I cannot decide between the two options."}
    cases, expected = [], []
    for row, stored in zip(rows, read):
        for move, reply in replies.items():
            extra_info = dict(stored["extra_info"])
            extra_info["num_turns"] = 2  # the naive reward manager adds these two keys before the call
            extra_info["rollout_reward_scores"] = {}
            cases.append({"data_source": stored["data_source"], "solution_str": reply,
                          "ground_truth": stored["reward_model"]["ground_truth"], "extra_info": extra_info})
            if move is None:
                expected.append(row["malformed_reward"])
            else:
                expected.append((row["row_payoffs"][move][row["opponent_move"]] - 1) / 3)
    cases_path = tmp_path / "cases.json"
    cases_path.write_text(json.dumps(cases))

    # -I: no PYTHON* variables, no user site, no script folder; -S: no site-packages, so not the editable install
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, str(verl_root / "utils" / "import_utils.py"),
                           grpo.reward_module_path(), str(SRC), str(cases_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == {"emrepro_importable": False, "src_on_path": False}
    # game_reward.py's fallback put its own src/ folder on sys.path, which made emrepro.games importable
    assert Path(out["games_file"]).resolve() == (SRC / "emrepro" / "games.py").resolve()
    assert out["module_name"].startswith("custom_module_")  # verl's anonymous module name
    assert len(out["results"]) == len(expected)
    for result, want, case in zip(out["results"], expected, cases):
        assert isinstance(result, dict) and set(result) >= {"score"}, result
        assert result["score"] == pytest.approx(want), (case["solution_str"], result)
        assert isinstance(result["score"], float)
    assert any(e == -0.5 for e in expected) and any(e not in (-0.5,) for e in expected)
    assert out["wrong_source"] == "ValueError"


def test_naive_reward_manager_calls_with_the_keywords_we_accept(verl_root):
    naive = _source(verl_root, "experimental/reward_loop/reward_manager/naive.py")
    for keyword in ("data_source=data_source", "solution_str=response_str", "ground_truth=ground_truth",
                    "extra_info=extra_info"):
        assert keyword in naive
    assert 'non_tensor_batch["reward_model"]["ground_truth"]' in naive
    assert 'non_tensor_batch["data_source"]' in naive
    assert 'result["score"]' in naive  # a dict result must carry "score"
    reward = _source(verl_root, "trainer/ppo/reward.py")
    assert "load_extern_object(module_path=module_path, object_name=fn_name)" in reward
    assert 'config.reward.get("custom_reward_function")' in reward


# --- b. parquet rows -------------------------------------------------------------------------------------

def test_parquet_rows_have_verl_dataset_layout(verl_root, verl_parquet, rows, paper_recipe):
    import pandas as pd

    frame = pd.read_parquet(verl_parquet)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert len(frame) == len(rows)
    for i, (row, stored) in enumerate(zip(rows, frame.to_dict("records"))):
        assert stored["data_source"] == DATA_SOURCE
        prompt = list(stored["prompt"])
        assert prompt and all(set(m) == {"role", "content"} for m in prompt)
        assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in prompt)
        assert prompt[-1]["role"] == "user"
        assert [dict(m) for m in prompt] == row["prompt"]
        truth = stored["reward_model"]["ground_truth"]
        assert isinstance(truth, str)
        assert json.loads(truth) == {c: row[c] for c in grpo.REWARD_COLUMNS}
        assert stored["reward_model"]["style"] == "rule"
        assert stored["extra_info"]["index"] == i and stored["extra_info"]["split"] == "train"

    # the keys verl's dataset and reward manager read
    tree = yaml.safe_load(_source(verl_root, "trainer/config/_generated_ppo_trainer.yaml"))
    assert tree["data"]["prompt_key"] in frame.columns
    assert tree["data"]["reward_fn_key"] in frame.columns
    rl_dataset = _source(verl_root, "utils/dataset/rl_dataset.py")
    assert 'config.get("prompt_key", "prompt")' in rl_dataset
    assert 'row_dict.get("extra_info", {}).get("index", 0)' in rl_dataset
    overrides = dict(o.split("=", 1) for o in grpo.verl_overrides(
        paper_recipe["recipe"], "/b", "/t", "/v", "/c", 0, "p", "e", ["console"]))
    assert overrides["data.prompt_key"] in frame.columns


# --- c. Hydra overrides and commands ---------------------------------------------------------------------

def test_overrides_exist_in_verl_config_and_carry_the_recipe(verl_root, paper_recipe, tmp_path):
    recipe, seed = paper_recipe["recipe"], paper_recipe["seed"]
    tree = yaml.safe_load(_source(verl_root, "trainer/config/_generated_ppo_trainer.yaml"))
    ckpt = str(tmp_path / "ckpt")
    overrides = grpo.verl_overrides(recipe, str(tmp_path / "base"), str(tmp_path / "train.parquet"),
                                    str(tmp_path / "val.parquet"), ckpt, seed, "emrepro", "grpo", ["console", "wandb"])
    pairs = [o.split("=", 1) for o in overrides]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "an override key is given twice"
    for key in keys:
        if key.startswith("+"):  # Hydra append: the parent must be a dict that lacks the key
            parent, leaf = key[1:].rsplit(".", 1)
            node = _tree_get(tree, parent)
            assert isinstance(node, dict), key
            assert leaf not in node, f"{key}: Hydra's '+' fails on an existing key; drop the '+'"
        else:
            try:
                _tree_get(tree, key)
            except KeyError:
                pytest.fail(f"override {key} is not in verl {verl_pin()}'s config tree")
    ov = dict(pairs)
    v = recipe["verl"]
    assert ov["algorithm.adv_estimator"] == "grpo"
    assert ov["trainer.total_training_steps"] == str(recipe["max_steps"]) == "75"
    assert ov["trainer.save_freq"] == str(recipe["save_steps"])
    assert ov["trainer.resume_mode"] == "auto"
    assert ov["trainer.default_local_dir"] == ckpt
    assert ov["trainer.n_gpus_per_node"] == str(v["n_gpus_per_node"]) and ov["trainer.nnodes"] == str(v["nnodes"])
    assert ov["trainer.logger"] == "[console,wandb]"
    assert ov["data.train_batch_size"] == str(recipe["prompts_per_step"])
    assert ov["data.max_prompt_length"] == str(recipe["max_prompt_length"])
    assert ov["data.max_response_length"] == str(recipe["max_completion_length"])
    assert ov["data.seed"] == str(seed)
    assert ov["+data.apply_chat_template_kwargs.enable_thinking"] == str(bool(recipe["enable_thinking"]))
    assert ov["actor_rollout_ref.rollout.n"] == str(recipe["num_generations"])
    assert ov["actor_rollout_ref.rollout.name"] == v["rollout_engine"]
    assert float(ov["actor_rollout_ref.rollout.temperature"]) == recipe["temperature"]
    assert float(ov["actor_rollout_ref.actor.optim.lr"]) == recipe["learning_rate"]
    assert float(ov["actor_rollout_ref.actor.kl_loss_coef"]) == recipe["kl_coef"]
    assert ov["actor_rollout_ref.actor.use_kl_loss"] == str(recipe["kl_coef"] > 0)
    assert ov["actor_rollout_ref.actor.ppo_mini_batch_size"] == str(v["ppo_mini_batch_size"])
    assert recipe["prompts_per_step"] % v["ppo_mini_batch_size"] == 0  # verl asserts this
    assert ov["actor_rollout_ref.model.path"] == str(tmp_path / "base")
    assert ov["data.train_files"] == str(tmp_path / "train.parquet")
    path = ov["reward.custom_reward_function.path"]
    assert Path(path).is_file() and Path(path).resolve() == (SRC / "emrepro" / "game_reward.py").resolve()
    assert ov["reward.custom_reward_function.name"] == "compute_score"
    # the values verl reads are valid names in verl
    core_algos = _source(verl_root, "trainer/ppo/core_algos.py")
    assert 'GRPO = "grpo"' in core_algos and '"low_var_kl"' in core_algos
    # the teacher checkpoint is one verl saves: every save_freq steps and at the last step
    assert recipe["teacher_step"] % recipe["save_steps"] == 0 or recipe["teacher_step"] == recipe["max_steps"]
    trainer = _source(verl_root, "trainer/ppo/ray_trainer.py")
    assert 'f"global_step_{self.global_steps}"' in trainer and 'os.path.join(local_global_step_folder, "actor")' in trainer


def test_train_and_merge_commands_match_verl_entry_points(verl_root, paper_recipe, tmp_path, monkeypatch):
    recipe = paper_recipe["recipe"]
    cmd = grpo.verl_train_command("/env/bin/python", ["a=1"])
    assert cmd[:3] == ["/env/bin/python", "-m", "verl.trainer.main_ppo"] and cmd[3:] == ["a=1"]
    main_ppo = _source(verl_root, "trainer/main_ppo.py")
    assert '@hydra.main(config_path="config", config_name="ppo_trainer"' in main_ppo
    assert (verl_root / "trainer" / "config" / "ppo_trainer.yaml").is_file()

    ckpt, target = tmp_path / "ckpt", tmp_path / "merged"
    merge = grpo.verl_merge_command("/env/bin/python", str(ckpt), recipe["teacher_step"], str(target))
    assert merge[:4] == ["/env/bin/python", "-m", "verl.model_merger", "merge"]
    assert (verl_root / "model_merger" / "__main__.py").is_file()
    main = _source(verl_root, "model_merger/__main__.py")
    assert "parse_args" in main and 'config.backend == "fsdp"' in main
    # run verl's own argparse definition (the module imports torch, so exec just that function)
    source_path = verl_root / "model_merger" / "base_model_merger.py"
    module = ast.parse(source_path.read_text())
    parse_args = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "parse_args")
    namespace = {"argparse": argparse}
    exec(compile(ast.Module(body=[parse_args], type_ignores=[]), str(source_path), "exec"), namespace)
    monkeypatch.setattr(sys, "argv", ["verl.model_merger", *merge[3:]])
    args = namespace["parse_args"]()
    assert args.operation == "merge" and args.backend == "fsdp"
    assert args.local_dir == str(ckpt / f"global_step_{recipe['teacher_step']}" / "actor")
    assert args.local_dir.endswith("global_step_75/actor")
    assert args.target_dir == str(target)


# --- d. train_grpo_verl with a fake python ---------------------------------------------------------------

FAKE = r"""
import json, sys
from pathlib import Path
argv = sys.argv[1:]
with open({log!r}, "a") as handle:
    handle.write(json.dumps(argv) + "\n")
stage = "merge" if argv[:2] == ["-m", "verl.model_merger"] else "train"
if stage == {fail!r}:
    sys.exit(1)
if stage == "merge":
    target = Path(argv[argv.index("--target_dir") + 1])
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps({{"model_type": "fake", "local_dir": argv[argv.index("--local_dir") + 1]}}))
"""


def _fake_python(tmp_path: Path, fail: str | None = None) -> tuple[str, Path]:
    log = tmp_path / f"calls-{fail}.jsonl"
    script = tmp_path / f"fake-{fail}.py"
    script.write_text(FAKE.format(log=str(log), fail=fail))
    wrapper = tmp_path / f"python-{fail}"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper), log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _run_verl(tmp_path: Path, recipe: dict, python: str | None, out_name: str = "grpo") -> tuple[Path, dict]:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    for name, text in (("tokenizer.json", '{"fake": "tokenizer"}'), ("tokenizer_config.json", '{"fake": 1}'),
                       ("chat_template.jinja", "{{ messages }}"), ("config.json", '{"model_type": "base"}')):
        (base / name).write_text(text)
    out = tmp_path / "models" / out_name
    final = grpo.train_grpo_verl(str(base), str(tmp_path / "train.parquet"), str(tmp_path / "val.parquet"),
                                 str(out), str(tmp_path / "work"), recipe, 0, "emrepro", "grpo", ["console"],
                                 python=python, make_run_json=lambda f: {"final_metrics": f, "step": "grpo"})
    return out, final


def test_train_grpo_verl_runs_main_ppo_then_merge(paper_recipe, tmp_path):
    recipe = paper_recipe["recipe"]
    python, log = _fake_python(tmp_path)
    out, final = _run_verl(tmp_path, recipe, python)
    calls = _calls(log)
    assert [c[:2] for c in calls] == [["-m", "verl.trainer.main_ppo"], ["-m", "verl.model_merger"]]
    train, merge = calls
    ckpt = (tmp_path / "work" / "checkpoints").resolve()
    assert f"trainer.default_local_dir={ckpt}" in train
    assert merge[2] == "merge"
    assert merge[merge.index("--local_dir") + 1] == str(ckpt / f"global_step_{recipe['teacher_step']}" / "actor")
    assert Path(merge[merge.index("--target_dir") + 1]).parent == out.parent  # merged into the atomic sibling
    assert out.is_dir()
    assert json.loads((out / "config.json").read_text())["model_type"] == "fake"  # the merged model, not the base
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_text() == (tmp_path / "base" / name).read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["step"] == "grpo"
    assert run["final_metrics"]["teacher_step"] == recipe["teacher_step"] == final["teacher_step"]
    assert run["final_metrics"]["global_step"] == recipe["max_steps"]
    assert [p.name for p in out.parent.iterdir()] == ["grpo"]  # no temporary sibling left


def test_train_grpo_verl_uses_emrepro_verl_python(paper_recipe, tmp_path, monkeypatch):
    python, log = _fake_python(tmp_path)
    monkeypatch.setenv("EMREPRO_VERL_PYTHON", python)
    out, _ = _run_verl(tmp_path, paper_recipe["recipe"], None)
    assert len(_calls(log)) == 2 and (out / "run.json").is_file()


@pytest.mark.parametrize("fail", ["train", "merge"])
def test_failing_verl_leaves_no_output_folder(paper_recipe, tmp_path, fail):
    python, log = _fake_python(tmp_path, fail=fail)
    with pytest.raises(subprocess.CalledProcessError):
        _run_verl(tmp_path, paper_recipe["recipe"], python)
    assert len(_calls(log)) == (1 if fail == "train" else 2)  # a failed training run is never merged
    models = tmp_path / "models"
    assert not (models / "grpo").exists()
    assert not models.exists() or not any(models.iterdir()), list(models.iterdir())
