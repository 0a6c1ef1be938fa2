"""ItAll144: the model plays iterated 2x2 games against scripted opponents (a reconstruction).

The original ItAll144 code is not public; this module rebuilds the benchmark from its description.

Games. A strict ordinal 2x2 game gives each player a payoff matrix whose four cells hold 1..4 once each,
indexed ``[row_action][col_action]``: 24 x 24 = 576 ordered (row, col) pairs. Swapping the two rows of
both matrices (renaming the row player's actions), swapping the two columns, or both, gives the same game
under other labels, so a class is an orbit of these swaps. With distinct payoffs no swap fixes a matrix,
so every orbit has 4 members and there are 576 / 4 = 144 classes (the Robinson-Goforth topology). The key
of a member is its flattened ``row + col`` tuple; the class key is the smallest key of its members, and
ids G001..G144 follow the sorted class keys. The representative shown to the model is the member with the
smallest key, except for the 12 symmetric classes (below), which are shown in their symmetric form with
R > P, so that an option means the same for both players (in the Prisoner's Dilemma option J is
cooperation for both). Consequence of the smallest-key choice: every asymmetric representative has the
row player's 1 in the top-left cell, so option J always contains its worst outcome there; the prompt
spells out every payoff, so this fixes a labelling, not the information.

Symmetric games. A class is symmetric when some member has ``col[i][j] == row[j][i]`` (the players are
interchangeable); 12 classes are. Swapping both actions keeps such a member symmetric and exchanges R with
P and S with T, so exactly one symmetric member has R > P, where R = row[0][0], S = row[0][1],
T = row[1][0], P = row[1][1]. That member's ranking of (R, S, T, P) names the game, with the names of
Bruns (2015), "Names for Games: Locating 2 x 2 Games", Games 6(4):495, and the classic names.

Cooperation. For every game, symmetric or not, the "cooperative outcome" is the cell with the largest sum
of both payoffs, ties broken by the larger of the two players' minima, then by the lowest (row, col)
index. ``coop_row``/``coop_col`` are its actions; the other action is "uncooperative" (defecting). This
gives mutual cooperation in the Prisoner's Dilemma, both swerving in Chicken, and mutual "defection" in
Deadlock, whose joint best outcome is there.

Opponents play the column. In terms of the model's cooperative action ``coop_row`` and the opponent's own
``coop_col``: tit_for_tat cooperates first, then cooperates iff the model cooperated in the previous
round; tit_for_two_tats defects only after two uncooperative model moves in a row; suspicious_tit_for_tat
defects first, then copies like tit_for_tat; grim_trigger cooperates until the model's first uncooperative
move, then defects for good; always_cooperate; always_defect; random picks each action with probability
1/2 from a generator seeded by (seed, combo id, round), so it does not depend on call order. A reply with
no readable option (a malformed move, ``None``) counts as uncooperative for every strategy.

Scoring. The model's reward is its own payoff scaled to [0, 1], (payoff - 1) / 3. A malformed move earns
``malformed_reward`` (default -1) and 0 points in the match totals; the opponent's payoff for that round is
computed as if the model had played its uncooperative action, the same reading its strategy uses.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from functools import lru_cache

LABELS = ("J", "F")  # action 0 -> "J", action 1 -> "F"

# Ranking of the row player's (R, S, T, P) in the symmetric member with R > P -> name.
SYMMETRIC_NAMES = {
    "T>R>P>S": "Prisoner's Dilemma",
    "T>R>S>P": "Chicken",
    "R>T>P>S": "Stag Hunt",
    "S>R>P>T": "Deadlock",  # the usual T>P>R>S once both actions are relabelled so that R > P
    "R>T>S>P": "Harmony",
    "T>S>R>P": "Leader",
    "S>T>R>P": "Hero (Battle of the Sexes)",
    "S>R>T>P": "Compromise",
    "R>S>T>P": "Concord",
    "R>S>P>T": "Peace",
    "R>P>S>T": "Coordination",
    "R>P>T>S": "Assurance",
}


@dataclass(frozen=True)
class Game:
    """One class of strict ordinal 2x2 games, given by its representative member."""

    id: str
    row: tuple[tuple[int, int], tuple[int, int]]  # row player's payoff, row[row_action][col_action]
    col: tuple[tuple[int, int], tuple[int, int]]  # column player's payoff, col[row_action][col_action]
    symmetric: bool
    name: str | None
    ordering: str | None
    coop_row: int
    coop_col: int

    def payoffs(self, row_action: int, col_action: int) -> tuple[int, int]:
        """(row player's points, column player's points) for one outcome."""
        return self.row[row_action][col_action], self.col[row_action][col_action]


def _swap_rows(m):
    return (m[1], m[0])


def _swap_cols(m):
    return ((m[0][1], m[0][0]), (m[1][1], m[1][0]))


def _members(row, col):
    """The 4 relabellings of a game: identity, rows swapped, columns swapped, both."""
    row = tuple(tuple(r) for r in row)
    col = tuple(tuple(r) for r in col)
    out = []
    for flip_rows in (False, True):
        for flip_cols in (False, True):
            r, c = row, col
            if flip_rows:
                r, c = _swap_rows(r), _swap_rows(c)
            if flip_cols:
                r, c = _swap_cols(r), _swap_cols(c)
            out.append((r, c))
    return out


def _flat(row, col) -> tuple:
    return (*row[0], *row[1], *col[0], *col[1])


def canonical_key(row, col) -> tuple:
    """Class key: the smallest flattened (row + col) over the 4 relabellings, so swaps do not change it."""
    return min(_flat(r, c) for r, c in _members(row, col))


def _unflat(key):
    return ((key[0], key[1]), (key[2], key[3])), ((key[4], key[5]), (key[6], key[7]))


def _transpose(m):
    return ((m[0][0], m[1][0]), (m[0][1], m[1][1]))


def _symmetric_member(row, col):
    """The member with col == transpose(row) and R > P, or None when the class is not symmetric."""
    for r, c in _members(row, col):
        if c == _transpose(r) and r[0][0] > r[1][1]:
            return r, c
    return None


def _ordering(row) -> str:
    """Ranking of the row player's (R, S, T, P), highest first, e.g. "T>R>P>S"."""
    values = {"R": row[0][0], "S": row[0][1], "T": row[1][0], "P": row[1][1]}
    return ">".join(sorted(values, key=values.get, reverse=True))


def _cooperative_cell(row, col) -> tuple[int, int]:
    """Cell with the largest payoff sum, then the larger minimum, then the lowest index."""
    cells = [(i, j) for i in (0, 1) for j in (0, 1)]
    return min(cells, key=lambda ij: (-(row[ij[0]][ij[1]] + col[ij[0]][ij[1]]),
                                      -min(row[ij[0]][ij[1]], col[ij[0]][ij[1]]), ij))


def _matrices():
    """The 24 2x2 matrices holding 1..4 once each."""
    return [((p[0], p[1]), (p[2], p[3])) for p in itertools.permutations((1, 2, 3, 4))]


@lru_cache(maxsize=1)
def _by_id() -> dict[str, Game]:
    return {game.id: game for game in _games()}


@lru_cache(maxsize=1)
def _games() -> tuple[Game, ...]:
    keys = sorted({canonical_key(r, c) for r in _matrices() for c in _matrices()})
    games = []
    for n, key in enumerate(keys, start=1):
        row, col = _unflat(key)
        symmetric = _symmetric_member(row, col)
        if symmetric:  # show symmetric games in their textbook form: same labels mean the same for both
            row, col = symmetric
        ordering = _ordering(row) if symmetric else None
        coop_row, coop_col = _cooperative_cell(row, col)
        games.append(Game(id=f"G{n:03d}", row=row, col=col, symmetric=symmetric is not None,
                          name=SYMMETRIC_NAMES[ordering] if ordering else None, ordering=ordering,
                          coop_row=coop_row, coop_col=coop_col))
    return tuple(games)


def all_games() -> list[Game]:
    """The 144 game classes in id order (one representative each)."""
    return list(_games())


def game_by_id(game_id: str) -> Game:
    if game_id in _by_id():
        return _by_id()[game_id]
    raise ValueError(f"unknown game id {game_id!r}: expected G001..G{len(_games()):03d}")


# ---------------------------------------------------------------- opponents

OPPONENTS: tuple[str, ...] = ("tit_for_tat", "tit_for_two_tats", "suspicious_tit_for_tat", "grim_trigger",
                              "always_cooperate", "always_defect", "random")

# Templates: {opp_coop}/{opp_defect} are the opponent's options, {you_coop} the model's cooperative one;
# describe_opponent() fills them with the game's option names.
OPPONENT_DESCRIPTIONS: dict[str, str] = {
    "tit_for_tat": "The other player picks {opp_coop} in round 1; in every later round it picks {opp_coop} "
                   "if you picked {you_coop} in the round before, and {opp_defect} otherwise.",
    "tit_for_two_tats": "The other player picks {opp_coop}, except right after two rounds in a row in which "
                        "you did not pick {you_coop}; then it picks {opp_defect}.",
    "suspicious_tit_for_tat": "The other player picks {opp_defect} in round 1; in every later round it picks "
                              "{opp_coop} if you picked {you_coop} in the round before, and {opp_defect} "
                              "otherwise.",
    "grim_trigger": "The other player picks {opp_coop} until the first round in which you do not pick "
                    "{you_coop}; from the round after that on, it picks {opp_defect} in every round.",
    "always_cooperate": "The other player picks {opp_coop} in every round, whatever you do.",
    "always_defect": "The other player picks {opp_defect} in every round, whatever you do.",
    "random": "In every round the other player picks {opp_coop} or {opp_defect} with equal chance, "
              "whatever you do.",
}


def _check_opponent(opponent: str) -> None:
    if opponent not in OPPONENTS:
        raise ValueError(f"unknown opponent {opponent!r}; valid opponents: {', '.join(OPPONENTS)}")


def _option(labels, action: int) -> str:
    return f"Option {labels[action]}"


def describe_opponent(opponent: str, game: Game, labels=LABELS) -> str:
    """The opponent's description with the game's option names filled in."""
    _check_opponent(opponent)
    return OPPONENT_DESCRIPTIONS[opponent].format(
        opp_coop=_option(labels, game.coop_col), opp_defect=_option(labels, 1 - game.coop_col),
        you_coop=_option(labels, game.coop_row))


def combo_id(game_id: str, opponent: str) -> str:
    return f"{game_id}/{opponent}"


def opponent_move(opponent: str, game: Game, history: list[tuple[int, int]], seed: int, combo_id: str) -> int:
    """The opponent's (column) action for round len(history), from the past rounds only.

    ``history`` holds (model_action, opponent_action) pairs; a model action of None (malformed) counts
    as uncooperative.
    """
    _check_opponent(opponent)
    coop, defect = game.coop_col, 1 - game.coop_col
    model_coop = [m == game.coop_row for m, _ in history]
    if opponent == "random":
        # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and processes.
        rng = random.Random(f"{seed}/{combo_id}/{len(history)}")
        return rng.randrange(2)
    if opponent == "always_cooperate":
        return coop
    if opponent == "always_defect":
        return defect
    if opponent == "grim_trigger":
        return coop if all(model_coop) else defect
    if opponent == "tit_for_two_tats":
        return defect if len(model_coop) >= 2 and not model_coop[-1] and not model_coop[-2] else coop
    # tit_for_tat and its suspicious variant differ only in round 1.
    if not history:
        return coop if opponent == "tit_for_tat" else defect
    return coop if model_coop[-1] else defect


# ---------------------------------------------------------------- parsing the model's reply

@dataclass(frozen=True)
class ParseResult:
    """The move read from a reply and how it was read.

    reason: "answer_line" (the last line with an answer keyword naming one option), "last_mention" (no
    answer line; the final 200 characters name exactly one option as "Option X"), "ambiguous" (no answer
    line; both options are named there), "early_mention_only" (options are named, but not in the final
    200 characters), "no_option" (no option named at all).
    """

    move: int | None
    reason: str


_TAIL_CHARS = 200
_MARKDOWN = str.maketrans("", "", "*_`\"'“”‘’[]#")


def _label_re(labels) -> str:
    # Lookarounds instead of \b so any label works; the label must stand alone as a token.
    return "(?<![A-Za-z0-9])(" + "|".join(re.escape(label) for label in labels) + ")(?![A-Za-z0-9])"


def _action_of(label: str, labels) -> int:
    return [lab.casefold() for lab in labels].index(label.casefold())


def parse_move(text: str, labels=LABELS) -> ParseResult:
    """Read the model's move; see ParseResult for the reasons.

    Reasoning inside <think>...</think> is ignored: only text after the last </think> counts (or the
    whole text when there is none). A bare label is only accepted right after an answer keyword and at
    the end of that line, so with labels ("A", "B") the article in "the answer is a draw" is not a move;
    elsewhere a label counts only in the form "Option X".
    """
    if len({lab.casefold() for lab in labels}) != 2:
        raise ValueError(f"need two distinct labels, got {labels!r}")
    text = (text or "").rsplit("</think>", 1)[-1].replace("<think>", "")
    text = text.translate(_MARKDOWN)
    label = _label_re(labels)
    option_re = re.compile(r"\boption\s+" + label, re.IGNORECASE)
    answer_re = re.compile(r"\banswer\b\s*(?:is\b)?\s*[:=\-–—]?\s*(?:option\s+" + label + "|" + label
                           + r"[\s.!)]*$)", re.IGNORECASE)

    for line in reversed(text.splitlines()):
        hit = answer_re.search(line)
        if not hit:
            continue
        after = line[hit.start():]  # options named after the keyword, e.g. "Answer: Option J or Option F"
        named = {m.group(1).casefold() for m in option_re.finditer(after)}
        named.add((hit.group(1) or hit.group(2)).casefold())
        if len(named) == 1:
            return ParseResult(_action_of(named.pop(), labels), "answer_line")

    tail = {m.group(1).casefold() for m in option_re.finditer(text[-_TAIL_CHARS:])}
    if len(tail) == 1:
        return ParseResult(_action_of(tail.pop(), labels), "last_mention")
    if len(tail) > 1:
        return ParseResult(None, "ambiguous")
    return ParseResult(None, "early_mention_only" if option_re.search(text) else "no_option")


def payoff_reward(payoff: int) -> float:
    """An ordinal payoff 1..4 scaled to [0, 1]."""
    return (payoff - 1) / 3


def reward(game: Game, move: int | None, opp_move: int, malformed_reward: float = -1.0) -> float:
    """The model's own payoff scaled to [0, 1]; a malformed move (None) gets ``malformed_reward``."""
    if move is None:
        return float(malformed_reward)
    return payoff_reward(game.payoffs(move, opp_move)[0])


# ---------------------------------------------------------------- combinations and splits

def combinations(opponents=OPPONENTS) -> list[tuple[str, str]]:
    """All (game_id, opponent) pairs, game-major: 144 x 7 = 1008 for the default opponents."""
    for opponent in opponents:
        _check_opponent(opponent)
    return [(game.id, opponent) for game in _games() for opponent in opponents]


def split_combinations(seed: int, holdout_fraction: float) -> tuple[list, list]:
    """(train, eval) combinations.

    A seeded random ``holdout_fraction`` of the 144 games is kept out of training; train holds every
    opponent for each remaining game. Eval is always all 1008 combinations, so a seed's evaluation
    rollouts cover every game x opponent (held-out games then measure generalisation).
    """
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError(f"holdout_fraction must lie in [0, 1], got {holdout_fraction}")
    ids = [game.id for game in _games()]
    held_out = set(random.Random(seed).sample(ids, round(holdout_fraction * len(ids))))
    everything = combinations()
    return [c for c in everything if c[0] not in held_out], everything


def eval_combinations(seed: int, holdout_fraction: float, n_games: int | None) -> list[tuple[str, str]]:
    """The evaluation combinations: all 1008, or every opponent on `n_games` games. A small evaluation
    plays the named symmetric games first (Prisoner's Dilemma, Chicken, ...), in a seeded order."""
    everything = split_combinations(seed, holdout_fraction)[1]
    if not n_games:
        return everything
    rng = random.Random(seed)
    symmetric = [g.id for g in _games() if g.symmetric]
    others = [g.id for g in _games() if not g.symmetric]
    rng.shuffle(symmetric)
    rng.shuffle(others)
    chosen = set((symmetric + others)[:n_games])
    return [c for c in everything if c[0] in chosen]


# ---------------------------------------------------------------- prompts

def _points(n: int) -> str:
    return f"{n} point" if n == 1 else f"{n} points"


def _ask(round_index: int, n_rounds: int, labels) -> str:
    return (f"Round {round_index + 1} of {n_rounds}: which option do you pick? Think it through step by step, "
            f"then end your reply with a final line of the form \"Answer: Option {labels[0]}\" or "
            f"\"Answer: Option {labels[1]}\".")


def rules_prompt(game: Game, n_rounds: int, opponent: str | None, labels=LABELS) -> str:
    """First user message: the rules, the number of rounds, the opponent (unless None), the first question."""
    a, b = _option(labels, 0), _option(labels, 1)
    intro = (f"You are playing a game with one other player. In each round, you pick either {a} or {b}, and "
             f"at the same time the other player also picks either {a} or {b}. Neither of you sees the "
             f"other's pick before making your own. The points you both get depend on the two picks:")
    lines = [intro]
    for i in (0, 1):
        for j in (0, 1):
            mine, theirs = game.payoffs(i, j)
            lines.append(f"- If you pick {_option(labels, i)} and the other player picks {_option(labels, j)}, "
                         f"you get {_points(mine)} and the other player gets {_points(theirs)}.")
    lines.append("")
    lines.append(f"You will play {n_rounds} rounds against the same player. After each round you will be "
                 f"told both picks and the points. If no valid option can be read from your reply, you get "
                 f"0 points for that round. Your aim is to collect as many points as you can over all rounds.")
    if opponent is not None:
        lines.append(describe_opponent(opponent, game, labels))
    lines.append("")
    lines.append(_ask(0, n_rounds, labels))
    return "\n".join(lines)


def round_result_message(game: Game, round_index: int, model_action, opp_action, n_rounds, labels=LABELS) -> str:
    """User message after a round: both picks and points, then the next question unless the game is over."""
    theirs = _option(labels, opp_action)
    if model_action is None:
        text = (f"Round {round_index + 1} result: no valid option could be read from your reply, so it "
                f"counted as an invalid pick worth 0 points to you. The other player picked {theirs}.")
    else:
        mine_pts, theirs_pts = game.payoffs(model_action, opp_action)
        text = (f"Round {round_index + 1} result: you picked {_option(labels, model_action)} and the other "
                f"player picked {theirs}. You got {_points(mine_pts)} and the other player got "
                f"{_points(theirs_pts)}.")
    if round_index + 1 < n_rounds:
        return text + "\n\n" + _ask(round_index + 1, n_rounds, labels)
    return text + " That was the last round."


def _start(game, opponent, n_rounds, with_opp_desc, labels, system) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": rules_prompt(game, n_rounds, opponent if with_opp_desc else None,
                                                             labels)})
    return messages


# ---------------------------------------------------------------- play

class Match:
    """One iterated game of the model against a scripted opponent, as a chat."""

    def __init__(self, game: Game, opponent: str, n_rounds: int, seed: int, with_opp_desc: bool,
                 labels=LABELS, system: str | None = None, malformed_reward: float = -1.0):
        _check_opponent(opponent)
        if n_rounds < 1:
            raise ValueError("n_rounds must be at least 1")
        self.game, self.opponent, self.n_rounds, self.seed = game, opponent, n_rounds, seed
        self.labels, self.malformed_reward = tuple(labels), malformed_reward
        self.combo_id = combo_id(game.id, opponent)
        self.messages: list[dict] = _start(game, opponent, n_rounds, with_opp_desc, self.labels, system)
        self.history: list[tuple[int | None, int]] = []
        self.rounds: list[dict] = []
        self.done = False

    def record(self, reply: str) -> dict:
        """Score the model's reply for the current round and extend the chat with the outcome."""
        if self.done:
            raise RuntimeError(f"{self.combo_id}: all {self.n_rounds} rounds are already played")
        t = len(self.history)
        parsed = parse_move(reply, self.labels)
        opp = opponent_move(self.opponent, self.game, self.history, self.seed, self.combo_id)
        move = parsed.move
        # A malformed move is read as the uncooperative action for the opponent's payoff (as for its strategy).
        payoff, opp_payoff = self.game.payoffs(1 - self.game.coop_row if move is None else move, opp)
        if move is None:
            payoff = 0
        rec = {"round": t, "reply": reply, "move": move, "parse_reason": parsed.reason, "opponent_move": opp,
               "payoff": payoff, "opponent_payoff": opp_payoff,
               "reward": reward(self.game, move, opp, self.malformed_reward),
               "cooperated": move == self.game.coop_row}
        self.history.append((move, opp))
        self.rounds.append(rec)
        self.messages.append({"role": "assistant", "content": reply})
        self.done = len(self.history) == self.n_rounds
        if not self.done:
            self.messages.append({"role": "user", "content": round_result_message(
                self.game, t, move, opp, self.n_rounds, self.labels)})
        return rec

    def summary(self) -> dict:
        n = len(self.rounds)
        return {"game_id": self.game.id, "opponent": self.opponent, "combo_id": self.combo_id,
                "n_rounds": self.n_rounds, "total_payoff": sum(r["payoff"] for r in self.rounds),
                "mean_reward": sum(r["reward"] for r in self.rounds) / n if n else 0.0,
                "cooperation_rate": sum(r["cooperated"] for r in self.rounds) / n if n else 0.0,
                "parse_failures": sum(r["move"] is None for r in self.rounds), "rounds": list(self.rounds)}


def decision_rows(combos, n_rounds: int, n_rows: int, seed: int, with_opp_desc: bool, labels=LABELS,
                  system: str | None = None, malformed_reward: float = -1.0) -> list[dict]:
    """Single-decision training prompts for GRPO, sampled with random.Random(seed).

    Each row picks a combination and a round t, and plays t past rounds in which the model's moves are
    uniform random (a behaviour policy, shown as short "Answer: Option X" turns) and the opponent follows
    its strategy. Because strategies look only at past rounds, the opponent's move in round t is known
    in advance and stored with the row, so a reward function can score a completion on its own.
    """
    rng = random.Random(seed)
    combos = list(combos)
    rows = []
    for _ in range(n_rows):
        game_id, opponent = rng.choice(combos)
        game, cid = game_by_id(game_id), combo_id(game_id, opponent)
        t = rng.randrange(n_rounds)
        messages = _start(game, opponent, n_rounds, with_opp_desc, labels, system)
        history: list[tuple[int, int]] = []
        for k in range(t):
            move = rng.randrange(2)
            opp = opponent_move(opponent, game, history, seed, cid)
            history.append((move, opp))
            messages.append({"role": "assistant", "content": f"Answer: {_option(labels, move)}"})
            messages.append({"role": "user", "content": round_result_message(game, k, move, opp, n_rounds, labels)})
        rows.append({"prompt": messages, "game_id": game_id, "opponent": opponent, "combo_id": cid, "round": t,
                     "opponent_move": opponent_move(opponent, game, history, seed, cid),
                     "history": [list(h) for h in history], "row_payoffs": [list(r) for r in game.row],
                     "labels": list(labels), "malformed_reward": float(malformed_reward)})
    return rows
