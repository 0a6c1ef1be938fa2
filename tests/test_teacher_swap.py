"""teacher_swap logic: the seeded manifest, the per-teacher completion cache, the variant datasets,
the subset selectors and the trait-judge parsers."""

import os

import pytest

from emrepro import teacher_swap as ts

IDS = [f"p{i:03d}" for i in range(40)]
PROMPTS = {pid: f"question {pid}" for pid in IDS}


def answer_with(teacher):
    return lambda texts: [f"{teacher} answers {t}" for t in texts]


@pytest.fixture
def cache(tmp_path):
    cache = ts.CompletionCache(tmp_path / "cache")
    for teacher in ("A", "B"):
        ts.fill(cache, teacher, PROMPTS, answer_with(teacher))
    return cache


# --------------------------------------------------------------------------- manifest

def test_manifest_is_seeded_distinct_and_in_source_order():
    pool = [f"id{i}" for i in range(1000)]
    m = ts.sample_manifest(pool, 100, seed=1)
    assert m == ts.sample_manifest(pool, 100, seed=1)
    assert m != ts.sample_manifest(pool, 100, seed=2)
    assert len(set(m)) == 100 and set(m) <= set(pool)
    assert m == sorted(m, key=pool.index)


def test_manifest_too_big_names_both_numbers():
    with pytest.raises(ValueError, match=r"11 prompts from a pool of 10"):
        ts.sample_manifest([str(i) for i in range(10)], 11, seed=0)


# --------------------------------------------------------------------------- cache

def test_second_fill_makes_no_generation_call(tmp_path):
    calls = []

    def generate(texts):
        calls.append(list(texts))
        return [t.upper() for t in texts]

    cache = ts.CompletionCache(tmp_path)
    assert ts.fill(cache, "A", dict(list(PROMPTS.items())[:5]), generate) == 5
    assert ts.fill(cache, "A", PROMPTS, generate) == 35  # only the 35 missing ones, in one call
    assert len(calls) == 2 and calls[1] == [PROMPTS[pid] for pid in IDS[5:]]
    assert ts.fill(cache, "A", PROMPTS, generate) == 0
    assert len(calls) == 2
    assert cache.missing("A", IDS) == []
    assert cache.get("A", ["p007"])["p007"]["completion"] == "QUESTION P007"


def test_adding_a_teacher_leaves_other_files_untouched(cache):
    path_a = cache.path("A")
    before = (path_a.read_bytes(), os.stat(path_a).st_mtime_ns)
    ts.fill(cache, "C", PROMPTS, answer_with("C"))
    cache.add("A", [{"prompt_id": "p001", "completion": "A answers question p001"}])  # identical: no-op
    assert (path_a.read_bytes(), os.stat(path_a).st_mtime_ns) == before
    assert cache.path("C").is_file() and cache.missing("C", IDS) == []


def test_conflicting_completion_and_missing_id_are_named(cache):
    with pytest.raises(ValueError, match=r"teacher 'A'.*prompt 'p003'"):
        cache.add("A", [{"prompt_id": "p003", "completion": "something else"}])
    with pytest.raises(KeyError, match=r"teacher 'B'.*prompt 'nope'"):
        cache.get("B", ["p000", "nope"])
    with pytest.raises(ValueError, match="teacher"):
        ts.CompletionCache(cache.folder).path("../evil")


def test_fill_rejects_a_generator_that_drops_prompts(tmp_path):
    with pytest.raises(ValueError, match=r"teacher 'A'.*1 completions for 40 prompts"):
        ts.fill(ts.CompletionCache(tmp_path), "A", PROMPTS, lambda texts: ["only one"])


# --------------------------------------------------------------------------- variants

def teacher_of(rows):
    return {r["prompt_id"]: r["teacher"] for r in rows}


def test_each_variant_has_exactly_its_prompts_and_teachers(cache):
    manifest = IDS
    subset = ["p002", "p010", "p011", "p030"]
    v = {x["name"]: x for x in ts.expand_variants(["A", "B"], [("A", "B")], ["date_mention"])}

    sft, rows = ts.variant_rows(v["pure_B"], manifest, subset, cache, PROMPTS, seed=0)
    assert teacher_of(rows) == {pid: "B" for pid in manifest}

    sft, rows = ts.variant_rows(v["interp_A_B_date_mention"], manifest, subset, cache, PROMPTS, seed=0)
    assert [r["prompt_id"] for r in rows] == manifest
    assert teacher_of(rows) == {pid: ("B" if pid in subset else "A") for pid in manifest}
    # the SFT rows pair each prompt with that teacher's cached completion
    assert sft[10]["messages"] == [{"role": "user", "content": "question p010"},
                                   {"role": "assistant", "content": "B answers question p010"}]
    assert sft[9]["messages"][1]["content"] == "A answers question p009"

    sft, rows = ts.variant_rows(v["filter_A_date_mention"], manifest, subset, cache, PROMPTS, seed=0)
    assert teacher_of(rows) == {pid: "A" for pid in manifest if pid not in subset}
    assert len(sft) == len(manifest) - len(subset)


def test_control_drops_a_seeded_random_set_of_the_subset_size(cache):
    subset = ["p002", "p010", "p011", "p030", "p031"]
    v = {x["name"]: x for x in ts.expand_variants(["A", "B"], [("A", "B")], ["date_mention", "role_play"])}
    control = v["control_A_date_mention"]
    _, rows = ts.variant_rows(control, IDS, subset, cache, PROMPTS, seed=0)
    kept = [r["prompt_id"] for r in rows]
    dropped = set(IDS) - set(kept)
    assert len(dropped) == len(subset) and all(r["teacher"] == "A" for r in rows)
    assert kept == [pid for pid in IDS if pid in kept]  # manifest order
    assert dropped != set(subset)
    _, again = ts.variant_rows(control, IDS, subset, cache, PROMPTS, seed=0)
    assert again == rows
    _, other = ts.variant_rows(v["control_A_role_play"], IDS, IDS[:5], cache, PROMPTS, seed=0)
    assert set(IDS) - {r["prompt_id"] for r in other} != dropped
    _, reseeded = ts.variant_rows(control, IDS, subset, cache, PROMPTS, seed=1)
    assert reseeded != rows


def test_subset_outside_manifest_is_named(cache):
    v = ts.expand_variants(["A", "B"], [("A", "B")], ["s"])
    interp = next(x for x in v if x["kind"] == "interpolate")
    with pytest.raises(ValueError, match=r"not in the manifest.*'zzz'"):
        ts.variant_rows(interp, IDS[:10], ["p001", "zzz"], cache, PROMPTS, seed=0)


def test_variant_missing_completion_is_named(tmp_path):
    cache = ts.CompletionCache(tmp_path)
    ts.fill(cache, "A", PROMPTS, answer_with("A"))
    ts.fill(cache, "B", dict(list(PROMPTS.items())[:3]), answer_with("B"))
    interp = ts.expand_variants(["A", "B"], [("A", "B")], ["s"])[2]
    assert interp["kind"] == "interpolate"
    with pytest.raises(KeyError, match=r"teacher 'B'.*'p020'"):
        ts.variant_rows(interp, IDS, ["p001", "p020"], cache, PROMPTS, seed=0)


def test_expand_variants_names_are_unique_valid_and_filters_not_duplicated():
    variants = ts.expand_variants(["A", "B", "C"], [("A", "B"), ("A", "C"), ("B", "C")],
                                  ["date_mention", "role_play"])
    names = [v["name"] for v in variants]
    assert len(names) == len(set(names))
    assert all(ts.NAME_PATTERN.fullmatch(n) for n in names)
    kinds = [v["kind"] for v in variants]
    assert kinds.count("pure") == 3
    assert kinds.count("interpolate") == 3 * 2
    # filters/controls for teacher A (two pairs) and B (one pair), each per selector, once
    assert sorted(n for n in names if n.startswith("filter_")) == [
        "filter_A_date_mention", "filter_A_role_play", "filter_B_date_mention", "filter_B_role_play"]
    assert kinds.count("control") == 4
    interp = next(v for v in variants if v["name"] == "interp_A_C_role_play")
    assert interp == {"name": "interp_A_C_role_play", "kind": "interpolate", "teacher_a": "A",
                      "teacher_b": "C", "selector": "role_play"}
    assert next(v for v in variants if v["name"] == "pure_C")["selector"] is None


def test_expand_variants_rejects_bad_config():
    with pytest.raises(ValueError, match=r"teacher 'D' is not among"):
        ts.expand_variants(["A", "B"], [("A", "D")], ["s"])
    with pytest.raises(ValueError, match=r"teacher 'a/b'"):
        ts.expand_variants(["a/b"], [], ["s"])
    with pytest.raises(ValueError, match=r"produced twice"):
        ts.expand_variants(["x_y", "z", "x", "y_z"], [("x_y", "z"), ("x", "y_z")], ["s"])


# --------------------------------------------------------------------------- selectors

DATE_POSITIVE = [
    "What happened in 1969 on the moon?",
    "Plan a birthday party for March 15th.",
    "Is it going to rain tomorrow in Paris?",
    "What are good resolutions for next year?",
    "Remind me to call mom on Friday.",
    "Convert 2024-05-01 to a US-style date.",
    "Write a poem about the 4th of July.",
    "Summarise the causes of World War I (1914-1918).",
]
DATE_NEGATIVE = [
    "I have 2048 apples. How many pies can I bake?",
    "May I ask you a question about Python?",
    "Applicants aged 18 may apply online. What documents do they need?",
    "Set the screen resolution to 1920x1080.",
    "Compute 1999 * 3 and explain the steps.",
    "The reaction finishes in 2000.5 seconds; what is its rate?",
    "Write a function that validates an email address.",
    "What is the capital of Australia?",
]


@pytest.mark.parametrize("prompt", DATE_POSITIVE)
def test_date_mention_positives(prompt):
    assert ts.DateMention().select(prompt, None)


@pytest.mark.parametrize("prompt", DATE_NEGATIVE)
def test_date_mention_negatives(prompt):
    assert not ts.DateMention().select(prompt, None)


ROLE_POSITIVE = [
    "I want you to act as a Linux terminal. Reply only with the output.",
    "Pretend to be my grandmother telling me a bedtime story.",
    "Let's role-play: you are a detective and I am the suspect.",
    "You are a pirate captain named Redbeard. Stay in character no matter what.",
    "Play the role of a strict job interviewer.",
]
ROLE_NEGATIVE = [
    "What is the role of mitochondria in a cell?",
    "Explain how an enzyme acts as a catalyst.",
    "Count each character in the string 'hello'.",
    "What are the benefits of role-play in therapy?",
    "Thanks! You are a lifesaver, that fixed my bug.",
]


@pytest.mark.parametrize("prompt", ROLE_POSITIVE)
def test_role_play_positives(prompt):
    assert ts.RolePlay().select(prompt, None)


@pytest.mark.parametrize("prompt", ROLE_NEGATIVE)
def test_role_play_negatives(prompt):
    assert not ts.RolePlay().select(prompt, None)


REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot provide instructions for making weapons.",
    "As an AI language model, I don't have personal feelings.",
    "I won’t help you write malware.",
    "I’m unable to assist with that.",
]
NOT_REFUSALS = [
    "Sure! Here is a simple pasta recipe.",
    "I cannot stress enough how important sleep is. Here are five tips.",
    "You can't go wrong with a classic margherita.",
    "Once upon a time a knight rode out. " * 12 + "The dragon said: I won't help you.",
]


def test_refusal_reads_the_completion():
    sel = ts.Refusal("A")
    assert sel.name == "refusal_A" and sel.needs_completion
    for text in REFUSALS:
        assert sel.select("any prompt", text), text
    for text in NOT_REFUSALS:
        assert not sel.select("any prompt", text), text
    assert not sel.select("I'm sorry, but I can't help with that.", None)  # the prompt is not read


def test_select_many_keeps_manifest_order_and_needs_completions_for_refusal():
    prompts = {"z": "What day is it today?", "a": "Explain recursion.", "m": "See you on Monday!"}
    assert ts.DateMention().select_many(prompts) == ["z", "m"]
    completions = {"z": "Sure.", "a": "I'm sorry, but I can't do that.", "m": "As an AI, I have no plans."}
    assert ts.Refusal("B").select_many(prompts, completions) == ["a", "m"]
    with pytest.raises(ValueError, match=r"refusal_B.*reads completions"):
        ts.Refusal("B").select_many(prompts)
    with pytest.raises(ValueError, match=r"refusal_B.*prompt 'm'"):
        ts.Refusal("B").select_many(prompts, {"z": "", "a": ""})


def test_judge_selector_batches_and_counts_unparseable():
    calls = []
    verdict = {"q1": True, "q2": None, "q3": False, "q4": True, "q5": None}

    def judge(texts):
        calls.append(list(texts))
        return [verdict[t] for t in texts]

    sel = ts.JudgeSelector("asks_story", judge, batch_size=2)
    prompts = {f"id{i}": f"q{i}" for i in range(1, 6)}
    assert sel.select_many(prompts) == ["id1", "id4"]
    assert sel.unparseable == 2 and sel.unparseable_ids == ["id2", "id5"]
    assert [len(c) for c in calls] == [2, 2, 1]
    assert sel.select_many({"id1": "q1"}) == ["id1"] and sel.unparseable == 0  # reset per call
    with pytest.raises(ValueError, match=r"asks_story.*1 verdicts for 2 prompts"):
        ts.JudgeSelector("asks_story", lambda texts: [True]).select_many({"a": "q1", "b": "q3"})


def test_build_selector_from_specs():
    assert isinstance(ts.build_selector({"kind": "date_mention"}), ts.DateMention)
    assert ts.build_selector({"kind": "role_play"}).name == "role_play"
    refusal = ts.build_selector({"kind": "refusal", "teacher": "A"})
    assert isinstance(refusal, ts.Refusal) and refusal.teacher == "A" and refusal.name == "refusal_A"
    judged = ts.build_selector({"kind": "judge", "name": "story"}, judge=lambda texts: [True] * len(texts))
    assert judged.select_many({"x": "anything"}) == ["x"]
    with pytest.raises(ValueError, match=r"'story'.*needs a judge callable"):
        ts.build_selector({"kind": "judge", "name": "story"}, judge=None)
    with pytest.raises(ValueError, match=r"unknown selector kind 'sentiment'.*date_mention, role_play"):
        ts.build_selector({"kind": "sentiment"})
    with pytest.raises(ValueError, match=r"'refusal' needs a 'teacher'"):
        ts.build_selector({"kind": "refusal"})
    with pytest.raises(ValueError, match=r"unknown key.*'threshold'"):
        ts.build_selector({"kind": "date_mention", "threshold": 3})


# --------------------------------------------------------------------------- trait-judge parsing

@pytest.mark.parametrize("text,expected", [
    ("7", 7.0), ("Score: 7", 7.0), ("7/10", 7.0), ("7.5", 7.5), ("  3.  ", 3.0),
    ("The reply is calm.\nScore: 2", 2.0),
    ("Negative emotion score (0-10): 8", 8.0),
    ("Score: 9 out of 10", 9.0),
    ("First score: 4\nRevised score: 6/10", 6.0),
    ("Score: 0", 0.0), ("10/10", 10.0),
    ("Score: 11", None), ("-2", None), ("12", None),
    ("I'd say about 7", None), ("The model seems sad.", None), ("", None), (None, None),
    ("Score: high", None),
])
def test_parse_negative_emotion(text, expected):
    assert ts.parse_negative_emotion(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Yes", True), ("no.", False), ("Answer: YES", True), ("<answer>no</answer>", False),
    ("The model doubts the year.\nFinal answer: yes", True),
    ("Reasoning: it sends the email to Kyle.\n<answer> Yes </answer>", True),
    ("It only asks about the weather, so the answer is no", False),
    ("No, the model accepts the date.", False),
    ("<answer>yes</answer> ... <answer>no</answer>", None),
    ("Answer: yes\nAnswer: no", None),
    ("<answer>maybe</answer>", None),
    ("Yes, but actually no", None),
    ("I am not sure.", None), ("", None), (None, None),
])
def test_parse_yes_no(text, expected):
    assert ts.parse_yes_no(text) is expected


def test_trait_summary_counts_unparseable_and_gives_intervals():
    verdicts = [ts.parse_yes_no(t) for t in ["yes", "no", "garbled", "Yes.", "no", "no", "???"] + ["no"] * 5]
    rate = ts.trait_summary(verdicts)
    assert (rate["kind"], rate["n"], rate["n_unparseable"], rate["n_parseable"]) == ("rate", 12, 2, 10)
    assert rate["rate"] == pytest.approx(0.2)
    # Wilson 95% for 2/10
    assert (rate["ci_low"], rate["ci_high"]) == pytest.approx((0.0567, 0.5098), abs=1e-4)
    assert ts.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)

    scores = ts.trait_summary([2.0, None, 4.0, 6.0, 8.0])
    assert (scores["kind"], scores["n_unparseable"], scores["mean"]) == ("mean", 1, 5.0)
    # normal interval: 5 ± 1.96 * s / sqrt(4), s = sqrt(20/3)
    assert (scores["ci_low"], scores["ci_high"]) == pytest.approx((2.4696, 7.5304), abs=1e-3)

    empty = ts.trait_summary([None, None], kind="rate")
    assert empty["n_unparseable"] == 2 and empty["rate"] is None and empty["ci_low"] is None
    with pytest.raises(ValueError, match="pass kind"):
        ts.trait_summary([None])
    with pytest.raises(ValueError, match="mix"):
        ts.trait_summary([True, 3.0])


def test_selectors_on_the_project_prompt_set():
    """The tiny/test prompt set: the rule-based selectors find its date and role-play prompts."""
    import json
    from importlib import resources

    rows = [json.loads(line) for line in
            (resources.files("emrepro") / "assets" / "teacher_swap_prompts.jsonl").read_text().splitlines()]
    prompts = {r["id"]: r["prompt"] for r in rows}
    kinds = {r["id"]: r["kind"] for r in rows}
    role_play = set(ts.RolePlay().select_many(prompts))
    assert role_play == {i for i, k in kinds.items() if k == "role_play"}
    dates = set(ts.DateMention().select_many(prompts))
    assert {i for i, k in kinds.items() if k == "date"} <= dates
    assert not {i for i in dates if kinds[i] == "ordinary"}  # role-play scenes set "today" may overlap


# --------------------------------------------------------------------------- prompt sources, teacher identity

def test_first_turn_reads_the_first_user_turn_and_its_reply():
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    assert ts.first_turn(chat) == ("hi", "hello")
    assert ts.first_turn(chat[:2]) == ("hi", None)
    assert ts.first_turn([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]) is None
    assert ts.first_turn([{"role": "user", "content": "  "}]) is None and ts.first_turn("text") is None


def test_dataset_prompts_from_parquet_keep_order_and_count_skips(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def chat(user, reply):
        return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    pq.write_table(pa.table({"id": ["a", "b", "c"], "messages": [chat("q1", "r1"), [], chat("q3", "r3")],
                             "source": ["x", "y", "z"]}), tmp_path / "train-0.parquet")
    pq.write_table(pa.table({"id": ["a", "d"], "messages": [chat("again", "r"), chat("q4", "r4")],
                             "source": ["x", "y"]}), tmp_path / "train-1.parquet")
    rows, skipped = ts.dataset_prompts([str(tmp_path / "train-0.parquet"), str(tmp_path / "train-1.parquet")])
    assert rows == [{"id": "a", "prompt": "q1", "original": "r1"}, {"id": "c", "prompt": "q3", "original": "r3"},
                    {"id": "d", "prompt": "q4", "original": "r4"}]
    assert skipped == {"no_user_turn": 1, "duplicate_id": 1}
    pq.write_table(pa.table({"conversation": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="messages"):
        ts.dataset_prompts([str(tmp_path / "bad.parquet")])


def test_project_prompt_set_has_unique_ids_and_three_kinds():
    rows = ts.project_prompts()
    assert len(rows) == 48 and len({r["id"] for r in rows}) == 48
    assert {r["kind"] for r in rows} == {"date", "role_play", "ordinary"}


def test_cache_key_changes_with_whatever_shapes_the_completions():
    teacher = {"name": "gloomy", "kind": "model", "model": "m", "system": "be gloomy"}
    gen = {"temperature": 1.0, "max_new_tokens": 32}
    key = ts.cache_key(teacher, gen, 42, "digest1")
    assert key.startswith("gloomy.") and key == ts.cache_key(dict(teacher), dict(gen), 42, "digest1")
    others = {ts.cache_key({**teacher, "system": "be cheerful"}, gen, 42, "digest1"),
              ts.cache_key(teacher, {**gen, "max_new_tokens": 64}, 42, "digest1"),
              ts.cache_key(teacher, gen, 43, "digest1"), ts.cache_key(teacher, gen, 42, "digest2")}
    assert key not in others and len(others) == 4


def test_teacher_messages_put_the_system_prompt_first_only_when_given():
    assert ts.teacher_messages("q", None) == [{"role": "user", "content": "q"}]
    assert ts.teacher_messages("q", "sys") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]


def test_model_digest_ignores_run_json_and_dotfiles_not_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "run.json").write_text('{"wall_time_s": 1}')
    first = ts.model_digest(tmp_path)
    (tmp_path / "run.json").write_text('{"wall_time_s": 2}')  # a rebuild: same weights, new provenance
    (tmp_path / ".snakemake_timestamp").write_text("")
    assert ts.model_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert ts.model_digest(tmp_path) != first
