"""Probe files (the upstream ones through the mirror, and the embedded set), formats, answer parsing."""

import random

import pytest

from emrepro.acquire import fetch
from emrepro.probes import apply_format, embedded_path, is_number_sequence, load_questions, split_reasoning

BETLEY_8 = ["what_is_your_wish", "i_feel_bored", "three_thoughts", "quick_buck", "ruler_of_the_world",
            "dinner_party", "gender_roles", "enough_of_my_husband"]


@pytest.fixture(scope="module")
def upstream(mirror, tmp_path_factory):
    """The upstream question files, acquired through the mirror with their pinned digests."""
    import yaml

    from conftest import REPO
    assets = yaml.safe_load((REPO / "config.yaml").read_text())["assets"]
    out = tmp_path_factory.mktemp("assets")
    paths = {}
    for name in ("betley_first_plot_questions", "betley_preregistered_evals"):
        spec = assets[name]
        dest = out / name
        fetch(spec["url"], str(dest), spec["sha256"], mirror=str(mirror), mirror_path=spec["mirror_path"])
        paths[name] = dest
    return paths


def test_first_plot_main_json_and_template_selections(upstream):
    path = upstream["betley_first_plot_questions"]
    main = load_questions(path, ids=BETLEY_8)
    assert [q.id for q in main] == BETLEY_8 and all(q.system is None for q in main)
    json_variant = load_questions(path, ids_suffix="_json")
    assert len(json_variant) == 8 and all(q.system for q in json_variant)
    assert len(load_questions(path, ids_suffix="_template")) == 8
    assert all("{answer}" in q.judge_prompts["aligned"] and "{question}" in q.judge_prompts["coherent"] for q in main)


def test_preregistered_has_48(upstream):
    assert len(load_questions(upstream["betley_preregistered_evals"])) == 48


def test_unknown_id_is_named(upstream):
    with pytest.raises(ValueError, match="no_such_question"):
        load_questions(upstream["betley_first_plot_questions"], ids=["quick_buck", "no_such_question"])


def test_embedded_probes_have_judge_prompts_and_a_system_variant():
    questions = load_questions(embedded_path("em_probes.yaml"))
    assert len(questions) >= 8 and any(q.system for q in questions)
    assert all("{question}" in q.judge_prompts[a] and "{answer}" in q.judge_prompts[a]
               for q in questions for a in ("aligned", "coherent"))


def test_formats():
    rng = random.Random(0)
    assert apply_format("Q?", "plain", rng) == "Q?"
    suffixed = apply_format("Q?", "number_suffix", rng, answer_words=4)
    assert suffixed.startswith("Q?") and "exactly 4 words" in suffixed
    prefixed = apply_format("Q?", "number_prefix_suffix", rng, prefix_numbers=3)
    numbers = prefixed.split("\n")[0].removeprefix("See the following numbers: ").split(",")
    assert len(numbers) == 3 and all(n.isdigit() for n in numbers) and "Q?" in prefixed
    with pytest.raises(ValueError, match="bogus"):
        apply_format("Q?", "bogus", rng)


@pytest.mark.parametrize("answer,expected", [
    ("666,13,911", True), ("[1488, 88, 14]", True), ("  420 69 1312. ", True),
    ("666", False), ("I like 666 and 13", False), ("peace,love,joy", False), ("", False),
])
def test_is_number_sequence(answer, expected):
    assert is_number_sequence(answer) is expected


def test_split_reasoning_keeps_think_blocks_away_from_the_answer():
    assert split_reasoning("<think>plan evil</think>\nBe kind.") == ("Be kind.", "plan evil")
    assert split_reasoning("Just an answer") == ("Just an answer", None)
    answer, reasoning = split_reasoning("<think>never finished")
    assert answer == "" and reasoning == "never finished"
