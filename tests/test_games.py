"""ItAll144 reconstruction: game classes, opponents, reply parsing, scoring, splits and training rows."""

import itertools
import random

import pytest

from emrepro import games as G
from emrepro.games import (
    LABELS,
    OPPONENT_DESCRIPTIONS,
    OPPONENTS,
    Match,
    all_games,
    canonical_key,
    combinations,
    combo_id,
    decision_rows,
    describe_opponent,
    game_by_id,
    opponent_move,
    parse_move,
    reward,
    round_result_message,
    rules_prompt,
    split_combinations,
)

PD_ROW = ((3, 1), (4, 2))  # R=3, S=1, T=4, P=2; action 0 = cooperate, 1 = defect


def T(m):
    return ((m[0][0], m[1][0]), (m[0][1], m[1][1]))


def swap_rows(m):
    return (m[1], m[0])


def swap_cols(m):
    return ((m[0][1], m[0][0]), (m[1][1], m[1][0]))


def all_matrices():
    return [((p[0], p[1]), (p[2], p[3])) for p in itertools.permutations((1, 2, 3, 4))]


def class_of(row, col):
    key = canonical_key(row, col)
    (game,) = [g for g in all_games() if canonical_key(g.row, g.col) == key]
    return game


@pytest.fixture(scope="module")
def pd():
    return class_of(PD_ROW, T(PD_ROW))


# ---------------------------------------------------------------- game classes

def test_144_classes_of_four_matrices_each():
    keys = [canonical_key(r, c) for r in all_matrices() for c in all_matrices()]
    assert len(keys) == 576
    counts = {k: keys.count(k) for k in set(keys)}
    assert len(counts) == 144 and set(counts.values()) == {4}
    games = all_games()
    assert [g.id for g in games] == [f"G{n:03d}" for n in range(1, 145)]
    assert {canonical_key(g.row, g.col) for g in games} == set(counts)  # one game per class
    for g in games:
        assert sorted(g.row[0] + g.row[1]) == [1, 2, 3, 4] and sorted(g.col[0] + g.col[1]) == [1, 2, 3, 4]
        assert game_by_id(g.id) is g


def test_canonical_key_invariant_under_swaps():
    rng = random.Random(0)
    mats = all_matrices()
    for _ in range(200):
        r, c = rng.choice(mats), rng.choice(mats)
        key = canonical_key(r, c)
        rows_swapped = (swap_rows(r), swap_rows(c))
        cols_swapped = (swap_cols(r), swap_cols(c))
        both = (swap_rows(swap_cols(r)), swap_rows(swap_cols(c)))
        assert canonical_key(*rows_swapped) == key
        assert canonical_key(*cols_swapped) == key
        assert canonical_key(*both) == key
    # swapping only one player's matrix is a different game in general
    assert canonical_key(PD_ROW, T(PD_ROW)) != canonical_key(PD_ROW, ((4, 3), (1, 2)))


def test_twelve_symmetric_classes_with_distinct_names():
    sym = [g for g in all_games() if g.symmetric]
    assert len(sym) == 12
    assert len({g.name for g in sym}) == 12 and set(G.SYMMETRIC_NAMES.values()) == {g.name for g in sym}
    assert all(g.name is None and g.ordering is None for g in all_games() if not g.symmetric)
    for g in sym:  # shown in symmetric form with R > P
        assert g.col == T(g.row) and g.row[0][0] > g.row[1][1]


def test_named_examples(pd):
    assert pd.name == "Prisoner's Dilemma" and pd.ordering == "T>R>P>S"
    # the same class presented with the column player's actions relabelled is still the PD
    assert class_of(((1, 3), (2, 4)), ((4, 3), (2, 1))) is pd
    chicken = class_of(((3, 2), (4, 1)), T(((3, 2), (4, 1))))
    assert chicken.name == "Chicken" and chicken.ordering == "T>R>S>P"
    stag = class_of(((4, 1), (3, 2)), T(((4, 1), (3, 2))))
    assert stag.name == "Stag Hunt" and stag.ordering == "R>T>P>S"
    deadlock = class_of(((2, 1), (4, 3)), T(((2, 1), (4, 3))))  # textbook T>P>R>S
    assert deadlock.name == "Deadlock"


def test_cooperative_actions(pd):
    assert (pd.coop_row, pd.coop_col) == (0, 0)  # mutual cooperation
    chicken = class_of(((3, 2), (4, 1)), T(((3, 2), (4, 1))))
    assert chicken.payoffs(chicken.coop_row, chicken.coop_col) == (3, 3)  # both swerve
    deadlock = class_of(((2, 1), (4, 3)), T(((2, 1), (4, 3))))
    assert deadlock.payoffs(deadlock.coop_row, deadlock.coop_col) == (3, 3)  # mutual "defection"
    cells = [(i, j) for i in (0, 1) for j in (0, 1)]
    for g in all_games():  # largest payoff sum, then the larger minimum, then the lowest index
        ranked = sorted(cells, key=lambda ij: (-sum(g.payoffs(*ij)), -min(g.payoffs(*ij)), ij))
        assert (g.coop_row, g.coop_col) == ranked[0]
    # the minimum decides between cells of equal sum: (1, 1) scores 3+3, (0, 0) 2+4
    assert G._cooperative_cell(((2, 1), (4, 3)), ((4, 2), (1, 3))) == (1, 1)


# ---------------------------------------------------------------- opponents

def play(opponent, game, model_moves, seed=0):
    history = []
    for m in model_moves:
        history.append((m, opponent_move(opponent, game, history, seed, combo_id(game.id, opponent))))
    return [o for _, o in history]


C, D = 0, 1  # in the PD representative


def test_opponents_on_scripted_history(pd):
    moves = [C, D, C, D, D, C, C, None, None, C]
    # opponent's move in round t responds to the model's moves before t
    assert play("tit_for_tat", pd, moves) == [C, C, D, C, D, D, C, C, D, D]
    assert play("suspicious_tit_for_tat", pd, moves) == [D, C, D, C, D, D, C, C, D, D]
    assert play("tit_for_two_tats", pd, moves) == [C, C, C, C, C, D, C, C, C, D]
    assert play("grim_trigger", pd, moves) == [C, C] + [D] * 8
    assert play("grim_trigger", pd, [C] * 6) == [C] * 6
    assert play("always_cooperate", pd, moves) == [C] * 10
    assert play("always_defect", pd, moves) == [D] * 10


def test_opponents_use_the_games_cooperative_actions():
    leader = next(g for g in all_games() if g.name == "Leader")
    assert (leader.coop_row, leader.coop_col) == (0, 1)
    assert play("always_cooperate", leader, [0]) == [1]
    assert play("tit_for_tat", leader, [1, 0, 0]) == [1, 0, 1]


def test_random_opponent_is_seeded(pd):
    cid = combo_id(pd.id, "random")
    hist = [(0, 0)] * 5
    a = [opponent_move("random", pd, hist[:t], 7, cid) for t in range(5)]
    # round-indexed: same answer whatever the history's content or the order of calls
    assert a == [opponent_move("random", pd, [(1, 1)] * t, 7, cid) for t in reversed(range(5))][::-1]
    long = [opponent_move("random", pd, [(0, 0)] * t, 7, cid) for t in range(2000)]
    other = [opponent_move("random", pd, [(0, 0)] * t, 8, cid) for t in range(2000)]
    assert long != other
    assert 900 < sum(long) < 1100


def test_unknown_opponent_lists_valid_ones(pd):
    with pytest.raises(ValueError, match="nice_guy.*tit_for_tat.*random"):
        opponent_move("nice_guy", pd, [], 0, "x")


# ---------------------------------------------------------------- parser

@pytest.mark.parametrize("text, move, reason", [
    ("Option J looks safe, but Option F pays more if they pick J.\nI'll go with F.\nAnswer: Option F",
     1, "answer_line"),
    ("Thinking...\n**Answer:** option j", 0, "answer_line"),
    ("Final answer - option F.", 1, "answer_line"),
    ("answer: J", 0, "answer_line"),
    ("<think>Answer: Option F is tempting.</think>\nAnswer: Option J", 0, "answer_line"),
    ("<think>I choose Option F</think>\nI will cooperate, so Option J.", 0, "last_mention"),
    ("I would rather not play this game.", None, "no_option"),
    ("Option J is nice. Option F is greedy. Hard to say.", None, "ambiguous"),
    ("Answer: Option J or Option F, I cannot decide.", None, "ambiguous"),
    ("Option J." + " More thoughts." * 30, None, "early_mention_only"),
])
def test_parse_move(text, move, reason):
    assert parse_move(text) == G.ParseResult(move, reason)


def test_parse_last_answer_line_wins():
    assert parse_move("Answer: Option J\nOn reflection, no.\nAnswer: Option F").move == 1


def test_parse_custom_labels_ignore_the_article():
    labels = ("A", "B")
    assert parse_move("The answer is a tough one; it is a dilemma. Answer: Option B", labels).move == 1
    assert parse_move("The answer is a tough one.", labels) == G.ParseResult(None, "no_option")
    assert parse_move("So my answer: a", labels).move == 0
    assert parse_move("Answer: Option J", labels).move is None  # J is not a label here


# ---------------------------------------------------------------- scoring through a match

def test_match_payoffs_rewards_and_malformed(pd):
    m = Match(pd, "tit_for_tat", n_rounds=4, seed=0, with_opp_desc=True, system="sys")
    assert [x["role"] for x in m.messages] == ["system", "user"]
    r1 = m.record("Answer: Option J")   # C vs C: 3
    r2 = m.record("Answer: Option F")   # D vs C: 4
    r3 = m.record("no idea")            # malformed vs D: 0 points, reward -1
    r4 = m.record("Answer: Option J")   # C vs D (malformed counted as defection): 1
    assert [r["opponent_move"] for r in (r1, r2, r3, r4)] == [C, C, D, D]
    assert [r["payoff"] for r in (r1, r2, r3, r4)] == [3, 4, 0, 1]
    assert [r["opponent_payoff"] for r in (r1, r2, r4)] == [3, 1, 4]
    assert [r["reward"] for r in (r1, r2, r3, r4)] == pytest.approx([2 / 3, 1.0, -1.0, 0.0])
    assert r3["move"] is None and r3["parse_reason"] == "no_option" and not r3["cooperated"]
    assert m.done and len(m.messages) == 2 + 4 + 3  # no user message after the last reply
    s = m.summary()
    assert s["total_payoff"] == 8 and s["parse_failures"] == 1 and s["combo_id"] == f"{pd.id}/tit_for_tat"
    assert s["mean_reward"] == pytest.approx((2 / 3 + 1 - 1 + 0) / 4)
    assert s["cooperation_rate"] == 0.5
    with pytest.raises(RuntimeError):
        m.record("Answer: Option J")


def test_reward_scale(pd):
    assert reward(pd, 1, 0) == 1.0 and reward(pd, 0, 1) == 0.0
    assert reward(pd, None, 0, malformed_reward=-0.5) == -0.5


# ---------------------------------------------------------------- combinations and splits

def test_combinations_and_split():
    combos = combinations()
    assert len(combos) == 1008 == len(set(combos)) and combos == combinations()
    train, ev = split_combinations(3, 0.25)
    assert ev == combos
    held = {g.id for g in all_games()} - {gid for gid, _ in train}
    assert len(held) == 36
    assert train == [c for c in combos if c[0] not in held]  # whole games out, every opponent kept
    assert split_combinations(3, 0.25) == (train, ev)
    assert split_combinations(4, 0.25)[0] != train
    assert split_combinations(3, 0.0)[0] == combos


# ---------------------------------------------------------------- prompts

def test_rules_prompt_with_and_without_opponent(pd):
    plain = rules_prompt(pd, 10, None)
    for opponent in OPPONENTS:
        assert describe_opponent(opponent, pd) in rules_prompt(pd, 10, opponent)
        for g in all_games()[:20] + [pd]:
            assert describe_opponent(opponent, g) not in rules_prompt(g, 10, None)
    lowered = plain.lower()
    for word in ("tit", "grim", "suspicious", "always", "random", "strategy", "cooperat", "defect"):
        assert word not in lowered
    # all four outcomes, both players' points, the round count and the answer format
    assert "you pick Option F and the other player picks Option J, you get 4 points and the other player " \
           "gets 1 point" in plain
    assert "10 rounds" in plain and plain.rstrip().endswith('"Answer: Option F".')
    assert "Option A" in rules_prompt(pd, 3, None, labels=("A", "B"))


def test_descriptions_render_the_games_options(pd):
    assert set(OPPONENT_DESCRIPTIONS) == set(OPPONENTS)
    assert describe_opponent("always_defect", pd) == "The other player picks Option F in every round, whatever you do."
    assert "{" not in "".join(describe_opponent(o, pd, ("A", "B")) for o in OPPONENTS)


def test_round_result_message(pd):
    msg = round_result_message(pd, 0, 1, 0, 3)
    assert "Option F" in msg and "You got 4 points and the other player got 1 point" in msg
    assert "Round 2 of 3" in msg and "Answer: Option J" in msg
    bad = round_result_message(pd, 2, None, 1, 3)
    assert "no valid option" in bad and "0 points" in bad and "Round 4" not in bad


# ---------------------------------------------------------------- training rows

def test_decision_rows():
    combos = combinations()[:70]
    rows = decision_rows(combos, n_rounds=6, n_rows=60, seed=5, with_opp_desc=False, system="sys")
    assert rows == decision_rows(combos, n_rounds=6, n_rows=60, seed=5, with_opp_desc=False, system="sys")
    assert rows != decision_rows(combos, n_rounds=6, n_rows=60, seed=6, with_opp_desc=False, system="sys")
    assert {r["round"] for r in rows} == set(range(6))
    for r in rows:
        game, t = game_by_id(r["game_id"]), r["round"]
        assert (r["game_id"], r["opponent"]) in combos and r["combo_id"] == combo_id(r["game_id"], r["opponent"])
        prompt = r["prompt"]
        assert len(prompt) == 2 * t + 2 and prompt[0]["role"] == "system" and prompt[-1]["role"] == "user"
        assert f"Round {t + 1} of 6" in prompt[-1]["content"]
        moves = [parse_move(m["content"]).move for m in prompt if m["role"] == "assistant"]
        history = [tuple(h) for h in r["history"]]
        assert moves == [m for m, _ in history] and len(history) == t
        # the opponent's past moves follow its strategy, and the stored move is its next one
        for k in range(t + 1):
            expected = opponent_move(r["opponent"], game, history[:k], 5, r["combo_id"])
            assert expected == (r["opponent_move"] if k == t else history[k][1])
        assert r["row_payoffs"] == [list(x) for x in game.row] and r["labels"] == list(LABELS)
        assert not any(describe_opponent(o, game) in prompt[1]["content"] for o in OPPONENTS)


def test_small_evaluations_play_named_games_with_every_opponent():
    small = G.eval_combinations(seed=3, holdout_fraction=0.25, n_games=2)
    assert len(small) == 14 and small == G.eval_combinations(3, 0.25, 2)
    chosen = {g for g, _ in small}
    assert all(G.game_by_id(g).name for g in chosen)
    assert {o for _, o in small} == set(G.OPPONENTS)
    assert len(G.eval_combinations(3, 0.25, None)) == 1008
