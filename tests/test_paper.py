"""Paper artifacts: a table in three formats, and a manifest whose models and data are the report step's."""

import json

import pytest

from emrepro import paper, report
from emrepro.provenance import run_info, sha256_file, sha256_tree, write_json_atomic


def test_table_formats_copies_csv_and_markdown_and_adds_rounded_latex(tmp_path):
    import pandas as pd

    report.write_table(pd.DataFrame({"model": ["base", "sft_1"], "em_rate": [0.123456, None]}), tmp_path / "em")
    out = tmp_path / "paper"
    out.mkdir()
    paper.table_formats(tmp_path / "em.csv", out / "em.csv", out / "em.md", out / "em.tex")
    assert (out / "em.csv").read_bytes() == (tmp_path / "em.csv").read_bytes()
    assert (out / "em.md").read_bytes() == (tmp_path / "em.md").read_bytes()
    tex = (out / "em.tex").read_text()
    assert "\\toprule" in tex and "0.123 " in tex and "0.123456" not in tex
    assert "sft\\_1" in tex and "n/a" in tex


@pytest.fixture
def report_step(tmp_path, monkeypatch):
    """A model folder, an evaluation of it (answers + run.json naming the model), a report run.json."""
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "sft"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": []}\n')
    write_json_atomic(model / "run.json", run_info({}, {"train": "train.jsonl"}, 0.0))
    answers = tmp_path / "eval" / "sft" / "answers.jsonl"
    answers.parent.mkdir(parents=True)
    answers.write_text('{"answer": "hi"}\n')
    write_json_atomic(answers.with_name("run.json"), run_info({}, {"model": "models/sft"}, 0.0))
    write_json_atomic(tmp_path / "run.json", run_info({}, {"answers_sft": "eval/sft/answers.jsonl"}, 0.0))
    return tmp_path


def test_report_sources_name_the_evaluated_model_and_the_data(report_step):
    models, data = paper.report_sources("run.json")
    assert list(models) == ["models/sft"] and models["models/sft"]["sha256"] == sha256_tree("models/sft")
    assert models["models/sft"]["trained_on"]["train"]["sha256"] == sha256_file("train.jsonl")
    assert data == {"eval/sft/answers.jsonl": {"sha256": sha256_file("eval/sft/answers.jsonl"),
                                               "input": "answers_sft"}}


def test_report_sources_refuse_data_changed_after_the_report(report_step):
    (report_step / "eval" / "sft" / "answers.jsonl").write_text('{"answer": "changed"}\n')
    with pytest.raises(ValueError, match="answers.jsonl changed after the report step"):
        paper.report_sources("run.json")


def test_manifest_lists_every_artifact_with_its_rule_models_and_data(report_step):
    (report_step / "fig.png").write_bytes(b"png")
    result = paper.manifest({"evil_numbers": {"rule": "evil_numbers_report", "provenance": "run.json",
                                              "artifacts": ["fig.png", "eval/sft/answers.jsonl"]}}, "test")
    assert result["scale"] == "test" and result["git_revision"]
    figure, table = result["artifacts"]
    assert (figure["kind"], table["kind"]) == ("figure", "table")
    assert figure == {"path": "fig.png", "kind": "figure", "family": "evil_numbers", "sha256": sha256_file("fig.png"),
                      "report_rule": "evil_numbers_report", "models": ["models/sft"],
                      "data": ["eval/sft/answers.jsonl"]}
    assert json.loads(json.dumps(result)) == result  # plain JSON
