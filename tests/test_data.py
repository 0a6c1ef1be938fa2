"""Evil-numbers data: the embedded sample, the seeded disjoint split, the TRL format."""

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
