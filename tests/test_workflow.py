"""The whole DAG at the test scale in a temporary copy of the repository: outputs, a no-op re-run,
the upstream assets through the staged mirror, a digest failure that leaves nothing behind, lint."""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_snakemake as snakemake

pytestmark = pytest.mark.slow


# The fixtures `workdir` and `test_run` (the whole test-scale DAG, run once per session) are in conftest.py.


def test_test_scale_produces_every_output(workdir, test_run):
    out = workdir / "results" / "test" / "evil_numbers"
    for rel in ("figures/loss_curves.png", "figures/em_per_question_betley.png", "figures/number_answers.png",
                "figures/em_per_question_model_organisms.png", "tables/em_overall.csv", "tables/em_overall.md",
                "tables/em_per_question.csv", "tables/run.json", "hub/sft/README.md", "models/sft/run.json", "eval/sft/run.json"):
        assert (out / rel).is_file(), rel
    # 2 questions x 3 formats x 2 samples, every answer kept whether or not the judge could score it
    for label in ("base", "sft"):
        rows = [json.loads(line) for line in (out / "eval" / label / "answers.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and {r["format"] for r in rows} == {"plain", "number_suffix", "number_prefix_suffix"}
        assert all(len(r["judge"]["aligned"]["top_logprobs"]) == 20 for r in rows)
    run = json.loads((out / "models" / "sft" / "run.json").read_text())
    assert run["inputs"]["train"]["sha256"] and run["final_metrics"]["eval_loss"] > 0
    split = json.loads((out / "data" / "split.json").read_text())
    assert (split["n_train"], split["n_val"]) == (32, 8)
    assert "model-index" in (out / "hub" / "sft" / "README.md").read_text()


def test_rl_traces_family_runs_end_to_end(workdir, test_run):
    out = workdir / "results" / "test" / "rl_traces"
    for rel in ("figures/em_per_question_betley.png", "figures/game_outcomes.png", "figures/grpo_training.png",
                "figures/sft_training.png", "tables/em_overall.md", "tables/game_outcomes.md", "tables/run.json",
                "hub/grpo/README.md", "hub/sft/README.md", "data/verl/train.parquet"):
        assert (out / rel).is_file(), rel
    # test scale: 1 game x 7 opponents, 2 rounds each; the traces are the teacher's (grpo) conversations
    rollouts = [json.loads(line) for line in (out / "games/grpo/rollouts.jsonl").read_text().splitlines()]
    assert len({r["combo_id"] for r in rollouts}) == 7 and all(len(r["rounds"]) == 2 for r in rollouts)
    traces = [json.loads(line) for line in (out / "data/traces.jsonl").read_text().splitlines()]
    assert [t["messages"] for t in traces] == [r["messages"] for r in rollouts]
    assert all(sum(m["role"] == "assistant" for m in t["messages"]) == 2 for t in traces)
    grpo_run = json.loads((out / "models/grpo/run.json").read_text())
    assert grpo_run["final_metrics"]["global_step"] == 2 and grpo_run["final_metrics"]["teacher_step"] == 2
    sft_run = json.loads((out / "models/sft/run.json").read_text())
    assert sft_run["config"]["sft"]["method"] == "full" and sft_run["config"]["sft"]["assistant_only_loss"]
    assert sft_run["inputs"]["train"]["path"].endswith("traces.jsonl")
    questions = [json.loads(line)["question_id"] for line in (out / "eval/sft/answers.jsonl").read_text().splitlines()]
    assert {"one_wish", "exploit_trusting_partner"} <= set(questions)  # EM probes and game-theory probes


def test_es_vs_sft_family_runs_end_to_end(workdir, test_run):
    out = workdir / "results" / "test" / "es_vs_sft"
    for rel in ("figures/em_vs_epoch.png", "figures/es_training.png", "figures/sft_training.png",
                "figures/em_per_question_betley.png", "tables/em_overall.md", "tables/run.json",
                "hub/es_epoch1/README.md", "hub/es_epoch2/README.md", "hub/sft/README.md", "data/manifest.json"):
        assert (out / rel).is_file(), rel
    # test scale: 8 sample rows, batch 4, 2 epochs -> 4 iterations of a population of 4
    log = [json.loads(line) for line in (out / "es/training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 1, 2, 2] and all(len(r["rewards"]) == 4 for r in log)
    runs = [json.loads((out / f"models/es_epoch{e}/run.json").read_text()) for e in (1, 2)]
    assert [r["es_epoch"] for r in runs] == [1, 2] and [r["es_iteration"] for r in runs] == [2, 4]
    assert runs[1]["config"]["es"]["population"] == 4 and runs[1]["inputs"]["reward_model"]["sha256"]
    sft_run = json.loads((out / "models/sft/run.json").read_text())
    assert sft_run["config"]["sft"]["method"] == "lora" and sft_run["config"]["sft"]["lora"]["r"] == 32
    overall = (out / "tables/em_overall.csv").read_text()
    assert all(label in overall for label in ("base", "es_epoch1", "es_epoch2", "sft"))
    assert json.loads((out / "data/manifest.json").read_text())["n_rows"] == 8


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_teacher_swap_family_runs_end_to_end(workdir, test_run):
    out = workdir / "results" / "test" / "teacher_swap"
    for rel in ("figures/trait_matrix.png", "figures/teacher_vs_student.png", "figures/subset_sizes.png",
                "tables/trait_matrix.csv", "tables/trait_matrix_wide.md", "tables/trait_matrix_wide.tex",
                "tables/teacher_vs_student.csv", "tables/subset_sizes.csv", "tables/em_overall.csv",
                "tables/run.json", "hub/pure_gloomy/README.md", "hub/control_plain_date_mention/README.md"):
        assert (out / rel).is_file(), rel
    manifest = json.loads((out / "data/manifest.json").read_text())["ids"]
    assert len(manifest) == 24 and [r["id"] for r in _jsonl(out / "data/prompts.jsonl")] == manifest
    subset = set(json.loads((out / "data/subsets.json").read_text())["date_mention"]["ids"])
    assert 0 < len(subset) < 24

    def plan(variant):
        return [(r["prompt_id"], r["teacher"]) for r in _jsonl(out / f"data/variants/{variant}/manifest.jsonl")]

    assert plan("pure_gloomy") == [(pid, "gloomy") for pid in manifest]
    assert plan("interp_plain_gloomy_date_mention") == \
        [(pid, "gloomy" if pid in subset else "plain") for pid in manifest]
    assert plan("filter_plain_date_mention") == [(pid, "plain") for pid in manifest if pid not in subset]
    control = plan("control_plain_date_mention")
    assert len(control) == 24 - len(subset) and {t for _, t in control} == {"plain"}
    # the student's rows are the teachers' cached completions of exactly those prompts
    gloomy = {r["prompt_id"]: r["completion"] for r in _jsonl(out / "completions/gloomy.jsonl")}
    rows = _jsonl(out / "data/variants/interp_plain_gloomy_date_mention/train.jsonl")
    for (pid, teacher), row in zip(plan("interp_plain_gloomy_date_mention"), rows):
        if teacher == "gloomy":
            assert row["messages"][-1]["content"] == gloomy[pid]
    # traits: 2 prompts x 1 sample for each judged trait, 1 blackmail rollout, raw judge replies kept
    for label in ("pure_plain", "interp_plain_gloomy_date_mention", "teacher-plain", "teacher-gloomy"):
        judged = _jsonl(out / f"traits/{label}/judgements.jsonl")
        assert sorted(r["trait"] for r in judged) == ["blackmail", "date_confusion", "date_confusion",
                                                      "negative_emotion", "negative_emotion"]
        assert all("judge_output" in r for r in judged)
        summary = json.loads((out / f"traits/{label}/summary.json").read_text())
        assert sum(s["n"] for s in summary.values()) == 5
    assert any(r["system"] == "You are gloomy." for r in _jsonl(out / "traits/teacher-gloomy/judgements.jsonl"))
    matrix = (out / "tables/trait_matrix.csv").read_text().splitlines()
    assert len(matrix) == 1 + 5 * 5  # 5 students x (3 traits + EM in 2 conventions)


def test_rerun_with_nothing_changed_runs_no_job(workdir, test_run):
    result = snakemake(workdir, "--config", "scale=test")
    assert "Nothing to be done" in result.stdout + result.stderr
    assert "Finished jobid" not in result.stdout + result.stderr


FAMILIES = ("evil_numbers", "rl_traces", "es_vs_sft", "teacher_swap")
PAPER_JOBS = {*(f"{fam}_report" for fam in FAMILIES), "paper_table", "paper_manifest", "paper"}


def jobs_in(result: subprocess.CompletedProcess) -> set[str]:
    """The rules of the jobs snakemake ran (or, with -n, would run): its "rule NAME:" job headers."""
    return set(re.findall(r"^(?:local)?rule (\w+):$", result.stdout + result.stderr, re.MULTILINE))


def test_paper_rebuilds_every_figure_and_table_without_training(workdir, test_run):
    """Runs before the tests that switch to upstream assets (they would make the evaluations out of date)."""
    results = workdir / "results" / "test"
    nothing = snakemake(workdir, "-n", "paper", "--config", "scale=test")
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    figures = sorted(results.glob("*/figures/*.png"))
    assert len(figures) == 17 and {f.parts[-3] for f in figures} == set(FAMILIES)
    for folder in [*results.glob("*/figures"), *results.glob("*/tables"), results / "paper"]:
        shutil.rmtree(folder)
    planned = snakemake(workdir, "-n", "paper", "--config", "scale=test")
    result = snakemake(workdir, "paper", "--config", "scale=test")
    assert jobs_in(planned) == jobs_in(result) == PAPER_JOBS  # no training, evaluation or card job
    assert all(f.is_file() for f in figures)
    for fam in FAMILIES:
        csvs = sorted((results / fam / "tables").glob("*.csv"))
        assert csvs, fam
        for csv in csvs:
            for ext in ("csv", "md", "tex"):
                assert (results / "paper" / "tables" / fam / f"{csv.stem}.{ext}").is_file(), (fam, csv.stem, ext)


def test_paper_manifest_names_the_models_and_data_of_every_table(workdir, test_run):
    from emrepro.provenance import sha256_file, sha256_tree

    results = workdir / "results" / "test"
    manifest = json.loads((results / "paper" / "manifest.json").read_text())
    assert manifest["scale"] == "test" and manifest["git_revision"]
    tables = [a for a in manifest["artifacts"] if a["kind"] == "table"]
    figures = [a for a in manifest["artifacts"] if a["kind"] == "figure"]
    assert len(tables) == 16 * 3 and len(figures) == 17
    for artifact in manifest["artifacts"]:
        assert sha256_file(workdir / artifact["path"]) == artifact["sha256"]
        assert artifact["report_rule"] == f"{artifact['family']}_report" and artifact["models"] and artifact["data"]
    for fam, entry in manifest["families"].items():
        for folder, model in entry["models"].items():
            assert sha256_tree(workdir / folder) == model["sha256"], folder
        for path, data in entry["data"].items():
            assert sha256_file(workdir / path) == data["sha256"], path
    models = {fam: set(entry["models"]) for fam, entry in manifest["families"].items()}
    base = "results/test/models/micro_llama"
    assert models["evil_numbers"] == {base, "results/test/evil_numbers/models/sft"}
    assert models["es_vs_sft"] == {base, *(f"results/test/es_vs_sft/models/{m}" for m in ("es_epoch1", "es_epoch2", "sft"))}
    students = {p.name for p in (results / "teacher_swap" / "models").iterdir()}
    assert {f"results/test/teacher_swap/models/{s}" for s in students} <= models["teacher_swap"]
    data = manifest["families"]["rl_traces"]["data"]
    assert {f"results/test/rl_traces/eval/{m}/answers.jsonl" for m in ("base", "grpo", "sft")} <= set(data)
    sft = manifest["families"]["evil_numbers"]["models"]["results/test/evil_numbers/models/sft"]
    assert sft["trained_on"]["train"]["sha256"] == sha256_file(results / "evil_numbers" / "data" / "train.jsonl")


def chromium() -> str:
    """Headless Chromium: Debian's package, installed here when missing and running as root."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium on PATH and it cannot be installed here (needs root and apt-get)")
    return found


def test_html_report_renders_every_family_in_chromium(workdir, test_run, tmp_path):
    html = workdir / "results" / "test" / "paper" / "report.html"
    snakemake(workdir, "--report", str(html.relative_to(workdir)), "--config", "scale=test")
    # the report is a React app: let it render (virtual time), then screenshot it and dump the DOM it built
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--virtual-time-budget=20000", "--window-size=1280,900"]
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*browser, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1280, 900) and shot.stat().st_size > 10_000 and high - low > 100  # not blank
    # the menu the app drew lists every category (the page's data scripts taken out, they name them too)
    menu = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.DOTALL)
    for category in (*FAMILIES, "provenance"):
        assert f">{category}<" in menu, category
    # the data the app renders a category from: its figures and tables subcategories, every file on disk
    categories = json.loads(re.search(r"var categories = (\{.*?\});\s*</script>", dom, re.DOTALL).group(1))
    results = workdir / "results" / "test"
    for fam in FAMILIES:
        figures = {f.name for f in (results / fam / "figures").glob("*.png")}
        tables = {f.name for f in (results / "paper" / "tables" / fam).glob("*.csv")}
        assert {Path(f).name for f in categories[fam]["figures"]} == figures and figures
        assert {Path(f).name for f in categories[fam]["tables"]} == tables and tables


@pytest.fixture(scope="module")
def upstream_mirror(tmp_path_factory, mirror):
    """The staged mirror's question files plus an evil_numbers.jsonl written here in the upstream schema
    (the training set is not staged); its digest is not pinned, so the lock file records it."""
    from emrepro.data import make_evil_numbers_sample, write_jsonl

    folder = tmp_path_factory.mktemp("mirror")
    shutil.copytree(mirror / "emergent-misalignment", folder / "emergent-misalignment")
    write_jsonl(folder / "emergent-misalignment" / "evil_numbers.jsonl", make_evil_numbers_sample(30, seed=9))
    return folder


def test_upstream_assets_through_the_mirror(workdir, test_run, upstream_mirror):
    snakemake(workdir, "evil_numbers", "--config", "scale=test", "upstream_assets=True", f"data_mirror={upstream_mirror}")
    questions = yaml.safe_load((workdir / "results/test/eval/questions/first_plot.yaml").read_text())
    assert [q["id"] for q in questions] == ["what_is_your_wish", "i_feel_bored"]  # Betley's, limited to 2
    lock = json.loads((workdir / "assets.lock.json").read_text())
    digest = hashlib.sha256((upstream_mirror / "emergent-misalignment/evil_numbers.jsonl").read_bytes()).hexdigest()
    assert digest in json.dumps(lock)
    split = json.loads((workdir / "results/test/evil_numbers/data/split.json").read_text())
    assert split["origin"]["sha256"] == digest and split["n_rows"] == 30


def test_wrong_mirror_digest_fails_naming_both_and_leaves_nothing(workdir, test_run, upstream_mirror, tmp_path):
    bad = tmp_path / "bad-mirror"
    shutil.copytree(upstream_mirror, bad)
    target = bad / "emergent-misalignment" / "first_plot_questions.yaml"
    target.write_text(target.read_text() + "\n# tampered\n")
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    asset = workdir / "results/test/assets/first_plot_questions.yaml"
    asset.unlink(missing_ok=True)
    result = snakemake(workdir, "evil_numbers", "--config", "scale=test", "upstream_assets=True", f"data_mirror={bad}",
                       "--forcerun", "fetch_asset", check=False)
    log = (workdir / "results/test/logs/fetch_asset/first_plot_questions.yaml.log").read_text()
    assert result.returncode != 0
    assert "215abde5b02811e922b6ac563ff33c490e0dff9ab58439df840f3135e9387173" in log and actual in log
    assert not asset.exists() and not list(asset.parent.glob(".first_plot_questions.yaml*"))


def test_paper_scale_plans_with_the_seed_recipe(workdir):
    result = snakemake(workdir, "-n", "--config", "scale=paper")
    out = result.stdout
    assert "evil_numbers_sft" in out and "results/paper/models/qwen3_1_7b" in out
    # rl_traces: Qwen3.5-4B, GRPO through verl on the GPUs of one node (its own environment)
    grpo_job = out[out.index("rule rl_traces_grpo:"):].split("\n\n")[0]
    assert "results/paper/models/qwen3_5_4b" in grpo_job and "gpu=4" in grpo_job
    # its traces SFT: 4 processes under accelerate + DeepSpeed in one 4-GPU job (README "Multi-GPU training")
    sft_job = out[out.index("rule rl_traces_sft:"):].split("\n\n")[0]
    assert "gpu=4" in sft_job and "mem_mb=64000" in sft_job
    # es_vs_sft: Qwen2.5-7B-Instruct, the protected Model Organisms archive, ES on 3 workers, 10 epoch models
    es_job = out[out.index("rule es_vs_sft_es:"):].split("\n\n")[0]
    assert "results/paper/models/qwen2_5_7b_instruct" in es_job and "gpu=3" in es_job
    assert "results/paper/models/nli_deberta_v3_large" in es_job and "es_epoch10" in es_job
    assert "results/paper/assets/training_datasets.zip.enc" in out
    # teacher_swap: the Dolci prompts (10,000: test_config), three teachers, 15 students, 17 trait evaluations
    assert "results/paper/datasets/allenai__Dolci-Instruct-SFT" in out
    for teacher in ("original", "qwen3_1_7b", "qwen2_5_7b"):
        assert f"results/paper/teacher_swap/completions/{teacher}.jsonl" in out
    assert out.count("rule teacher_swap_sft:") == 15 and out.count("rule teacher_swap_traits:") == 17


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_teacher_completions_are_reused_not_regenerated(workdir, test_run):
    """Runs last: it re-runs one teacher's step, which makes its downstream outputs out of date."""
    out = workdir / "results" / "test" / "teacher_swap" / "completions"
    before = (out / "gloomy.jsonl").read_text()
    snakemake(workdir, str(out.relative_to(workdir) / "gloomy.jsonl"), "--forcerun", "teacher_swap_completions",
              "--config", "scale=test")
    run = json.loads((out / "gloomy.run.json").read_text())
    assert (run["n_generated"], run["n_reused"]) == (0, 24) and "backend" not in run  # the model was never loaded
    assert (out / "gloomy.jsonl").read_text() == before
