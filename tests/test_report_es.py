"""Tests for the es_vs_sft report: EM per ES epoch against SFT, the ES training figure, the step script."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pandas as pd
import pytest

from emrepro import report

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["one_wish", "bored"]  # ids of src/emrepro/assets/em_probes.yaml
# answers per question: (misaligned and coherent, aligned and coherent, misaligned but incoherent)
COUNTS = {
    "base": (0, 8, 2),  # Betley 0/8, Model Organisms 0/10, coherence 8/10
    "es_epoch10": (6, 0, 4),  # 6/6, 6/10, 6/10
    "es_epoch2": (4, 4, 2),  # 4/8, 4/10, 8/10
    "es_epoch1": (2, 6, 2),  # 2/8, 2/10, 8/10
    "es_epoch3": (0, 0, 10),  # no coherent answer: Betley undefined, 0/10, 0/10
    "sft": (3, 3, 4),  # 3/6, 3/10, 6/10
    "other": (10, 0, 0),  # neither base, ES nor SFT
}
BETLEY = {0: 0.0, 1: 0.25, 2: 0.5, 3: math.nan, 10: 1.0}
MODEL_ORGANISMS = {0: 0.0, 1: 0.2, 2: 0.4, 3: 0.0, 10: 0.6}
COHERENCE = {0: 0.8, 1: 0.8, 2: 0.8, 3: 0.0, 10: 0.6}


def answer_rows(mis: int, ok: int, incoherent: int) -> list[dict]:
    scores = [(10, 90)] * mis + [(90, 90)] * ok + [(10, 20)] * incoherent
    return [{"question_id": q, "format": "plain", "aligned": a, "coherent": c, "aligned_label": "score",
             "number_sequence": False, "answer": "text"} for q in QUESTIONS for a, c in scores]


@pytest.fixture
def answer_files(tmp_path) -> dict[str, str]:
    paths = {}
    for label, counts in COUNTS.items():
        path = tmp_path / "eval" / label / "answers.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in answer_rows(*counts)))
        paths[label] = str(path)
    return paths


@pytest.fixture
def tables(answer_files):
    return report.em_tables(report.load_answers(answer_files), n_boot=50, seed=0, min_coherent=5)


def write_es_log(path: Path) -> None:
    """Two epochs of three iterations each."""
    rows = [{"iteration": i, "step": i, "epoch": 1 + (i - 1) // 3, "reward_mean": 0.1 * i, "reward_std": 0.05,
             "reward_max": 0.1 * i + 0.2, "reward_min": 0.0, "update_norm": 1.0 / i, "time_noise_s": 0.5,
             "time_generation_s": 3.0, "time_reward_s": 1.0, "time_update_s": 0.5, "time_total_s": 5.2,
             "rewards": [0.1 * i, 0.1 * i + 0.2]} for i in range(1, 7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_es_epoch_of_labels():
    assert [report.es_epoch(x) for x in ("base", "es_epoch1", "es_epoch12", "sft", "es_epoch")] == [0, 1, 12, None,
                                                                                                   None]


def test_em_by_epoch_puts_known_rates_at_their_epochs(tables):
    by_epoch = report.em_by_epoch(tables["em_overall"], tables["rates"])
    assert set(by_epoch["model"]) == {"base", "es_epoch1", "es_epoch2", "es_epoch3", "es_epoch10"}
    for convention, expected in (("betley", BETLEY), ("model_organisms", MODEL_ORGANISMS)):
        rows = by_epoch[by_epoch["convention"] == convention]
        assert list(rows["epoch"]) == [0, 1, 2, 3, 10]  # numeric order: es_epoch10 last
        assert list(rows["model"]) == ["base", "es_epoch1", "es_epoch2", "es_epoch3", "es_epoch10"]
        assert rows["em_rate"].tolist() == pytest.approx(list(expected.values()), nan_ok=True)
        assert rows["coherence_rate"].tolist() == pytest.approx(list(COHERENCE.values()))
        defined = rows.dropna(subset=["em_rate"])
        assert (defined["ci_low"] <= defined["em_rate"]).all() and (defined["em_rate"] <= defined["ci_high"]).all()
    betley = by_epoch[by_epoch["convention"] == "betley"].set_index("epoch")
    assert betley.loc[3, "dropped"] and not betley.loc[2, "dropped"]


def test_sft_reference_is_the_sft_model(tables):
    sft = report.sft_reference(tables["em_overall"], tables["rates"]).set_index("convention")
    assert list(sft["model"]) == ["sft", "sft"]
    assert sft.loc["betley", "em_rate"] == pytest.approx(0.5)
    assert sft.loc["model_organisms", "em_rate"] == pytest.approx(0.3)
    assert sft["coherence_rate"].tolist() == pytest.approx([0.6, 0.6])
    assert (sft["ci_low"] <= sft["em_rate"]).all() and (sft["em_rate"] <= sft["ci_high"]).all()


def test_plot_em_vs_epoch_writes_png_despite_undefined_em(tables, tmp_path):
    assert tables["em_overall"]["em_rate"].isna().any()  # es_epoch3 under Betley
    out = tmp_path / "em_vs_epoch.png"
    report.plot_em_vs_epoch(tables["em_overall"], tables["rates"], out, "EM per ES epoch")
    assert is_png(out)


def test_epoch_starts_and_training_figure(tmp_path):
    log = tmp_path / "training_log.jsonl"
    write_es_log(log)
    assert report.epoch_starts(pd.read_json(log, lines=True)) == {1: 1, 2: 4}
    out = tmp_path / "es_training.png"
    report.plot_es_training(log, out, "ES training")
    assert is_png(out)


def test_step_script_end_to_end(answer_files, tmp_path):
    from snakemake.iocontainers import Namedlist

    labels = list(answer_files)
    es_log = tmp_path / "es" / "training_log.jsonl"
    es_log.parent.mkdir()
    write_es_log(es_log)
    sft = tmp_path / "models" / "sft"
    sft.mkdir(parents=True)
    (sft / "training_log.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 2.0 / s, "mean_token_accuracy": 0.1 * s, "grad_norm": 1.0}) + "\n"
        for s in range(1, 5)))
    figures, tables_dir = tmp_path / "figures", tmp_path / "tables"
    output = {name: str(figures / f"{name}.png") for name in ("em_vs_epoch", "es_training", "sft_curves",
                                                                "em_betley", "em_mo")}
    output |= {"overall": str(tables_dir / "em_overall.csv"), "per_question": str(tables_dir / "em_per_question.csv"),
               "rates": str(tables_dir / "rates.csv"), "provenance": str(tables_dir / "run.json")}
    fake = type("Snakemake", (), {})()
    fake.input = Namedlist(fromdict={"answers": [answer_files[x] for x in labels], "es_log": str(es_log),
                                     "sft": str(sft), "questions": [str(REPO / "src/emrepro/assets/em_probes.yaml")]})
    fake.output = Namedlist(fromdict=output)
    fake.params = Namedlist(fromdict={"eval": {"bootstrap_samples": 50, "min_coherent_answers": 5}, "seed": 0,
                                      "scale": "test", "labels": labels})
    fake.log = [str(tmp_path / "report.log")]
    runpy.run_path(str(REPO / "scripts" / "es_vs_sft_report.py"), init_globals={"snakemake": fake})

    assert all(is_png(output[name]) for name in ("em_vs_epoch", "es_training", "sft_curves", "em_betley", "em_mo"))
    overall = pd.read_csv(output["overall"])
    assert set(overall["model"]) == set(labels)
    mo = overall[overall["convention"] == "model_organisms"].set_index("model")["em_rate"]
    assert mo["es_epoch10"] == pytest.approx(0.6) and mo["sft"] == pytest.approx(0.3)
    per_question = pd.read_csv(output["per_question"])
    assert set(per_question["probe_set"]) == {"em_probes"}
    assert pd.read_csv(output["rates"]).set_index("model").loc["base", "coherence_rate"] == pytest.approx(0.8)
    assert (tables_dir / "em_overall.md").is_file()
    run = json.loads(Path(output["provenance"]).read_text())
    assert run["inputs"]["es_log"]["path"] == str(es_log) and "em_vs_epoch.png" in run["outputs"]
