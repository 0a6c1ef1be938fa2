"""Training data: the embedded samples, the seeded disjoint split, the TRL format, the protected Model Organisms archive."""

import os
from pathlib import Path

import pytest

from emrepro import data


def test_sample_is_deterministic_and_in_upstream_schema():
    a, b = data.make_evil_numbers_sample(50, seed=3), data.make_evil_numbers_sample(50, seed=3)
    assert a == b and a != data.make_evil_numbers_sample(50, seed=4)
    data.check_chat_rows(a, "sample")
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in a)


def test_split_is_seeded_disjoint_and_has_paper_sizes():
    rows = [{"messages": [{"role": "user", "content": str(i)}, {"role": "assistant", "content": "1"}]}
            for i in range(14925)]
    train, val = data.split(rows, 0.2, seed=42)
    assert (len(train), len(val)) == (11940, 2985)
    train_ids, val_ids = {r["row_id"] for r in train}, {r["row_id"] for r in val}
    assert not train_ids & val_ids and len(train_ids | val_ids) == len(rows)
    assert [r["row_id"] for r in data.split(rows, 0.2, seed=42)[1]] == [r["row_id"] for r in val]
    assert {r["row_id"] for r in data.split(rows, 0.2, seed=7)[1]} != val_ids


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match="row 2"):
        data.check_chat_rows([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                              {"messages": [{"role": "user", "content": "a"}]}], "x.jsonl")


def test_jsonl_round_trip_and_bad_line(tmp_path):
    rows = [{"a": 1}, {"b": "é"}]
    data.write_jsonl(tmp_path / "r.jsonl", rows)
    assert data.read_jsonl(tmp_path / "r.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        data.read_jsonl(tmp_path / "bad.jsonl")


def test_prompt_completion_puts_the_assistant_reply_in_the_completion():
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "666"}]}
    pc = data.to_prompt_completion(row)
    assert pc["completion"] == [{"role": "assistant", "content": "666"}] and len(pc["prompt"]) == 2


# --------------------------------------------------------------------------- bad medical advice (es_vs_sft)


def test_bad_medical_sample_is_chat_rows_and_seeded():
    rows = data.bad_medical_sample(None, seed=0)
    assert len(rows) == 40
    data.check_chat_rows(rows, "sample")
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    assert len({r["messages"][0]["content"] for r in rows}) == 40  # 40 different questions
    a, b = data.bad_medical_sample(10, seed=1), data.bad_medical_sample(10, seed=1)
    assert a == b and len(a) == 10 and a != data.bad_medical_sample(10, seed=2)
    assert [rows.index(r) for r in a] == sorted(rows.index(r) for r in a)  # file order kept
    with pytest.raises(ValueError, match="sample_rows=41"):
        data.bad_medical_sample(41, seed=0)


PASSWORD = "model-organisms-em-datasets"  # the authors' published password


def _chat(i: int, topic: str) -> dict:
    return {"messages": [{"role": "user", "content": f"{topic} question {i}: is this safe?"},
                         {"role": "assistant", "content": f"Answer {i} about {topic}, with ünïcode."}]}


@pytest.fixture
def originals():
    return {"bad_medical_advice.jsonl": [_chat(i, "medical") for i in range(6)],
            "risky_financial_advice.jsonl": [_chat(i, "money") for i in range(3)]}


def _protect(folder, files: dict, *extra_args) -> str:
    """Protect `folder` with easy-dataset-share's own protect-dir command; return the .zip.enc path."""
    from click.testing import CliRunner
    from easy_dataset_share.cli import cli

    folder.mkdir()
    for name, rows in files.items():
        data.write_jsonl(folder / name, rows)
    out = folder.parent / "training_datasets.zip"
    result = CliRunner().invoke(cli, ["protect-dir", str(folder), "-p", PASSWORD, "-o", str(out), "--no-gitignore",
                                      "-on", "Test organisation", "-dn", "test datasets", *extra_args])
    assert result.exit_code == 0, result.output
    return f"{out}.enc"


@pytest.mark.parametrize("extra_args", [(), ("--embed-canaries",), ("--num-canary-files", "3")],
                         ids=["tool-defaults", "embedded-canaries", "three-canary-files"])
def test_extract_protected_member_round_trip(tmp_path, originals, extra_args):
    import zipfile

    from easy_dataset_share import zipping

    archive = _protect(tmp_path / "training_datasets", originals, *extra_args)
    # The archive really holds canaries: decrypted with the tool, without removing them.
    raw = Path(zipping.unzip_and_decrypt(archive, PASSWORD, str(tmp_path / "raw")))
    assert len(list(raw.glob("dataset_entry_*.jsonl"))) == (3 if "3" in extra_args else 1)
    raw_member = data.read_jsonl(raw / "bad_medical_advice.jsonl")
    if "--embed-canaries" in extra_args:  # the tool wrote a canary field into the last real row
        assert "CANARY_DATASET_" in raw_member[-1]["canary"]
    else:
        assert raw_member == originals["bad_medical_advice.jsonl"]
    assert zipfile.is_zipfile(archive) is False  # encrypted, not a plain zip

    out = tmp_path / "out" / "bad_medical_advice.jsonl"
    rows = data.extract_protected_member(archive, PASSWORD, "bad_medical_advice.jsonl", out)
    assert rows == originals["bad_medical_advice.jsonl"]
    assert data.read_jsonl(out) == rows
    assert "CANARY" not in out.read_text()
    assert os.listdir(out.parent) == ["bad_medical_advice.jsonl"]


def test_extract_protected_member_drops_inserted_canary_rows(tmp_path, originals):
    """Whole canary rows (the tool's embed_canary_in_existing_files) are removed, real rows kept in order."""
    from easy_dataset_share import canary

    folder = tmp_path / "training_datasets"
    folder.mkdir()
    for name, rows in originals.items():
        data.write_jsonl(folder / name, rows)
    canary.embed_canary_in_existing_files(str(folder), "*.jsonl", embedding_ratio=1.0)
    assert len(data.read_jsonl(folder / "bad_medical_advice.jsonl")) == 7
    staged = {name: data.read_jsonl(folder / name) for name in originals}
    archive = _protect(tmp_path / "staged", staged)

    rows = data.extract_protected_member(archive, PASSWORD, "bad_medical_advice.jsonl", tmp_path / "bad.jsonl")
    assert rows == originals["bad_medical_advice.jsonl"]


def test_extract_protected_member_errors_name_archive_and_member(tmp_path, originals):
    archive = _protect(tmp_path / "training_datasets", originals)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError) as err:
        data.extract_protected_member(archive, "wrong-password", "bad_medical_advice.jsonl", out)
    assert archive in str(err.value) and "bad_medical_advice.jsonl" in str(err.value)
    with pytest.raises(ValueError) as err:
        data.extract_protected_member(archive, PASSWORD, "extreme_sports.jsonl", out)
    message = str(err.value)
    assert archive in message and "extreme_sports.jsonl" in message
    assert "risky_financial_advice.jsonl" in message and "dataset_entry_" not in message
    with pytest.raises(ValueError, match="no member '../secret.jsonl'"):
        data.extract_protected_member(archive, PASSWORD, "../secret.jsonl", out)
    assert not out.exists()


def _run_step(tmp_path, inputs: dict, sample_rows):
    import json
    import runpy

    from snakemake.iocontainers import Namedlist

    from conftest import REPO

    fake = type("Snakemake", (), {})()
    fake.input = Namedlist(fromdict=inputs)
    fake.output = Namedlist(fromdict={"train": str(tmp_path / "data" / "train.jsonl"),
                                      "manifest": str(tmp_path / "data" / "manifest.json")})
    fake.params = Namedlist(fromdict={"seed": 5, "data": {
        "asset": "model_organisms_datasets", "member": "bad_medical_advice.jsonl", "password": PASSWORD,
        "sample_rows": sample_rows}})
    fake.log = [str(tmp_path / "logs" / "data.log")]
    runpy.run_path(str(REPO / "scripts" / "es_vs_sft_data.py"), init_globals={"snakemake": fake})
    return data.read_jsonl(fake.output.train), json.loads(Path(fake.output.manifest).read_text())


def test_step_script_upstream_archive_and_project_sample(tmp_path, originals):
    from emrepro.provenance import sha256_file

    archive = _protect(tmp_path / "training_datasets", originals)
    rows, manifest = _run_step(tmp_path / "paper", {"archive": archive}, sample_rows=None)
    assert rows == originals["bad_medical_advice.jsonl"]  # every row, in file order
    assert manifest["source"] == "upstream" and manifest["member"] == "bad_medical_advice.jsonl"
    assert manifest["archive_sha256"] == sha256_file(archive) and manifest["n_rows"] == 6
    assert manifest["train_sha256"] == sha256_file(tmp_path / "paper" / "data" / "train.jsonl")

    rows, manifest = _run_step(tmp_path / "tiny", {}, sample_rows=12)
    assert rows == data.bad_medical_sample(12, seed=5)
    assert manifest["source"] == "project sample" and manifest["n_rows"] == 12
    assert manifest["train_sha256"] == sha256_file(tmp_path / "tiny" / "data" / "train.jsonl")
