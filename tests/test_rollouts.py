"""Rollouts on ItAll144: the round-by-round play loop with a scripted generator, the traces dataset, the
outcome table, the backend choice, and seeded generation with the micro model."""

import pytest

from emrepro.games import Match, game_by_id
from emrepro.rollouts import (
    choose_backend,
    make_matches,
    match_seed,
    outcome_table,
    play,
    traces_dataset,
    transformers_generator,
)

GAMES_CFG = {"rounds": 3, "opponent_description": False, "labels": ["J", "F"], "system": None,
             "malformed_reward": -1.0}
PD = "G072"  # Prisoner's Dilemma: row payoffs J/J 3, J/F 1, F/J 4, F/F 2; J is cooperation for both
OPPONENTS = ("always_defect", "always_cooperate", "tit_for_tat", "suspicious_tit_for_tat", "grim_trigger",
             "tit_for_two_tats")


class Scripted:
    """A generator that replies by round (the number of assistant turns so far) and records its calls."""

    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def __call__(self, conversations, seeds):
        self.calls.append(([list(c) for c in conversations], list(seeds)))
        return [self.replies[sum(m["role"] == "assistant" for m in c)] for c in conversations]


def test_prisoners_dilemma_game_is_g072():
    game = game_by_id(PD)
    assert game.name == "Prisoner's Dilemma" and game.row == ((3, 1), (4, 2)) and game.coop_row == 0


def test_play_always_j_against_always_defect_gets_the_sucker_payoff_every_round():
    matches = make_matches([(PD, "always_defect")], dict(GAMES_CFG, rounds=4), seed=0)
    gen = Scripted(["Let me think.\nAnswer: Option J"] * 4)
    (summary,) = play(matches, gen, seed=0, batch_size=8, progress=False)
    # J against F every round: S = 1 point, reward (1 - 1) / 3 = 0, always cooperating
    assert summary["total_payoff"] == 4 and summary["mean_reward"] == 0.0
    assert summary["cooperation_rate"] == 1.0 and summary["parse_failures"] == 0
    assert [r["opponent_payoff"] for r in summary["rounds"]] == [4, 4, 4, 4]


def test_play_scripted_matches_totals_seeds_and_batches():
    combos = [(PD, opponent) for opponent in OPPONENTS]
    gen = Scripted(["Answer: Option J", "Cooperating got exploited?\nAnswer: Option F", "Answer: Option J"])
    matches = make_matches(combos, GAMES_CFG, seed=7)
    summaries = play(matches, gen, seed=7, batch_size=4, progress=False)

    # hand computation for the model playing J, F, J (payoffs R=3 S=1 T=4 P=2):
    #   always_defect      F F F -> 1 + 2 + 1 = 4      always_cooperate J J J -> 3 + 4 + 3 = 10
    #   tit_for_tat        J J F -> 3 + 4 + 1 = 8      suspicious_tft   F J F -> 1 + 4 + 1 = 6
    #   grim_trigger       J J F -> 3 + 4 + 1 = 8      tit_for_two_tats J J J -> 3 + 4 + 3 = 10
    expected = {"always_defect": (4, "FFF"), "always_cooperate": (10, "JJJ"), "tit_for_tat": (8, "JJF"),
                "suspicious_tit_for_tat": (6, "FJF"), "grim_trigger": (8, "JJF"), "tit_for_two_tats": (10, "JJJ")}
    for s in summaries:
        total, opp_moves = expected[s["opponent"]]
        assert s["total_payoff"] == total, s["opponent"]
        assert "".join("JF"[r["opponent_move"]] for r in s["rounds"]) == opp_moves
        assert s["n_rounds"] == 3 and len(s["rounds"]) == 3 and [r["move"] for r in s["rounds"]] == [0, 1, 0]
        assert s["cooperation_rate"] == pytest.approx(2 / 3) and s["parse_failures"] == 0
    ad = next(s for s in summaries if s["opponent"] == "always_defect")
    assert ad["mean_reward"] == pytest.approx((0 + 1 / 3 + 0) / 3)

    # 6 matches in batches of at most 4: rounds of 4 + 2 conversations, 3 rounds
    assert [len(convs) for convs, _ in gen.calls] == [4, 2] * 3
    for convs, seeds in gen.calls:
        assert all(c[-1]["role"] == "user" for c in convs)  # every conversation asks for the next move
    # seeds: match_seed(seed, combo, round), in match order within each round
    flat = [s for _, seeds in gen.calls for s in seeds]
    assert flat == [match_seed(7, m.combo_id, t) for t in range(3) for m in matches]
    assert len(set(flat)) == len(flat)  # distinct across matches and rounds
    assert match_seed(7, f"{PD}/tit_for_tat", 1) == match_seed(7, f"{PD}/tit_for_tat", 1)
    assert match_seed(8, f"{PD}/tit_for_tat", 1) != match_seed(7, f"{PD}/tit_for_tat", 1)

    # a re-run of the same seed asks with the same seeds and plays the same trajectories
    again = Scripted(gen.replies)
    assert play(make_matches(combos, GAMES_CFG, seed=7), again, seed=7, batch_size=4, progress=False) == summaries
    assert [s for _, seeds in again.calls for s in seeds] == flat


def test_play_ends_each_match_after_its_own_rounds_and_scores_malformed_replies():
    game = game_by_id(PD)
    short = Match(game, "always_defect", n_rounds=1, seed=0, with_opp_desc=True)
    long = Match(game, "always_defect", n_rounds=3, seed=0, with_opp_desc=True)
    gen = Scripted(["I refuse to choose.", "Answer: Option F", "Answer: Option F"])
    s_short, s_long = play([short, long], gen, seed=0, batch_size=2, progress=False)
    assert [len(convs) for convs, _ in gen.calls] == [2, 1, 1]  # the 1-round match is not asked again
    assert s_short["parse_failures"] == 1 and s_short["total_payoff"] == 0 and s_short["mean_reward"] == -1.0
    assert s_short["rounds"][0]["opponent_payoff"] == 2  # the malformed move read as defection: F/F
    assert s_long["total_payoff"] == 0 + 2 + 2 and s_long["parse_failures"] == 1
    assert s_long["mean_reward"] == pytest.approx((-1 + 1 / 3 + 1 / 3) / 3)
    assert s_short["messages"][-1] == {"role": "assistant", "content": "I refuse to choose."}


@pytest.mark.parametrize("system", [None, "You are a strategic player."])
def test_traces_dataset_rows_are_whole_conversations_with_rewards(system):
    combos = [(PD, "tit_for_tat"), ("G098", "random"), ("G003", "always_defect")]
    replies = ["Answer: Option J", "Answer: Option F", "hmm", "Answer: Option J"]
    summaries = play(make_matches(combos, dict(GAMES_CFG, rounds=4, system=system), seed=1), Scripted(replies),
                     seed=1, batch_size=2, progress=False)
    rows = traces_dataset(summaries)
    assert len(rows) == len(combos)
    for row, s in zip(rows, summaries):
        messages = row["messages"]
        if system is not None:
            assert messages[0] == {"role": "system", "content": system}
            messages = messages[1:]
        else:
            assert all(m["role"] != "system" for m in messages)
        assert [m["role"] for m in messages] == ["user", "assistant"] * 4
        assert [m["content"] for m in messages if m["role"] == "assistant"] == replies
        assert messages[-1]["content"] == replies[-1]
        for key in ("combo_id", "game_id", "opponent", "total_payoff", "mean_reward", "cooperation_rate",
                    "parse_failures"):
            assert row[key] == s[key]
        assert row["parse_failures"] == 1


def test_outcome_table_per_opponent_and_overall():
    def summary(opponent, n_rounds, total, reward, coop, failures):
        return {"opponent": opponent, "n_rounds": n_rounds, "total_payoff": total, "mean_reward": reward,
                "cooperation_rate": coop, "parse_failures": failures}

    table = outcome_table([summary("tit_for_tat", 4, 8, 0.5, 0.25, 1),
                           summary("tit_for_tat", 2, 6, 0.25, 1.0, 0),
                           summary("always_defect", 5, 5, -0.2, 0.4, 5)])
    assert list(table["opponent"]) == ["always_defect", "tit_for_tat", "all"]
    rows = table.set_index("opponent").to_dict("index")
    # always_defect: 1 match, 5 / 5 points per round, every reply unreadable
    assert rows["always_defect"] == pytest.approx({"matches": 1, "payoff_per_round": 1.0, "mean_reward": -0.2,
                                                   "cooperation_rate": 0.4, "parse_failure_rate": 1.0})
    # tit_for_tat: (8/4 + 6/2) / 2 = 2.5 points per round, failure rate (1/4 + 0/2) / 2 = 0.125
    assert rows["tit_for_tat"] == pytest.approx({"matches": 2, "payoff_per_round": 2.5, "mean_reward": 0.375,
                                                 "cooperation_rate": 0.625, "parse_failure_rate": 0.125})
    # all: unweighted means over the 3 matches
    assert rows["all"] == pytest.approx({"matches": 3, "payoff_per_round": 2.0, "mean_reward": 0.55 / 3,
                                         "cooperation_rate": 0.55, "parse_failure_rate": 1.25 / 3})


def test_choose_backend():
    archs = ["Qwen3_5ForCausalLM"]
    backend, reason = choose_backend("vllm", archs, {"Qwen3_5ForCausalLM", "LlamaForCausalLM"})
    assert backend == "vllm"
    backend, reason = choose_backend("vllm", archs, {"Qwen3ForCausalLM", "Qwen3_5ForConditionalGeneration"})
    assert backend == "transformers" and "Qwen3_5ForCausalLM" in reason
    backend, reason = choose_backend("vllm", archs, None)
    assert backend == "vllm" and "trying it" in reason
    assert choose_backend("transformers", archs, {"Qwen3_5ForCausalLM"})[0] == "transformers"
    assert choose_backend("transformers", archs, set())[0] == "transformers"
    assert choose_backend("vllm", [], {"LlamaForCausalLM"})[0] == "transformers"  # no architecture named


def test_transformers_generator_is_seeded_and_greedy_at_temperature_zero(micro_chat_model):
    conversations = [[{"role": "user", "content": "What is your wish?"}],
                     [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "Continue the sequence 1, 2, 3"},
                      {"role": "assistant", "content": "666,13,911"},
                      {"role": "user", "content": "And now?"}]]
    sample = transformers_generator(micro_chat_model, temperature=1.0, top_p=1.0, max_new_tokens=8,
                                    enable_thinking=False)
    first = sample(conversations, [11, 12])
    assert len(first) == 2 and all(isinstance(r, str) for r in first)
    assert sample(conversations, [11, 12]) == first  # same seeds, same replies
    others = [sample(conversations, [s, s + 1]) for s in (100, 200, 300)]
    assert any(o != first for o in others)  # the seeds drive the sampling (a random model: ~never all equal)

    greedy = transformers_generator(micro_chat_model, temperature=0.0, top_p=1.0, max_new_tokens=8,
                                    enable_thinking=False)
    g = greedy(conversations, [1, 2])
    assert greedy(conversations, [3, 4]) == g  # greedy: the seeds do not matter


def test_play_with_the_micro_model_is_reproducible(micro_chat_model):
    generate = transformers_generator(micro_chat_model, temperature=1.0, top_p=1.0, max_new_tokens=6,
                                      enable_thinking=False)
    combos = [(PD, "tit_for_tat"), ("G098", "random")]
    cfg = dict(GAMES_CFG, rounds=2)
    a = play(make_matches(combos, cfg, seed=3), generate, seed=3, batch_size=2, progress=False)
    b = play(make_matches(combos, cfg, seed=3), generate, seed=3, batch_size=2, progress=False)
    assert a == b
    assert all(len(s["rounds"]) == 2 and s["messages"][-1]["role"] == "assistant" for s in a)
