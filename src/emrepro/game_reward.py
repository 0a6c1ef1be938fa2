"""Reward of one reply in an ItAll144 decision: the model's own payoff, normalised, or a malformed-move penalty.

Two callers, one rule:
- TRL's GRPOTrainer calls `trl_reward(prompts, completions, **columns)` with the dataset's columns
  (`row_payoffs`, `opponent_move`, `labels`, `malformed_reward`) as keyword arguments.
- verl loads this file by path (`reward.custom_reward_function.path`, name `compute_score`) in its own
  environment and calls `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` with
  `ground_truth` = the JSON string written by `grpo.verl_row`.
The file stays importable by path alone: when the package is not installed it adds its own `src/` folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from emrepro.games import parse_move, payoff_reward
except ImportError:  # loaded by file path where the package is not installed (e.g. a verl worker)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from emrepro.games import parse_move, payoff_reward

DATA_SOURCE = "itall144"


def score_reply(reply: str, row_payoffs, opponent_move: int, labels, malformed_reward: float) -> dict:
    """{"score", "move", "parse_reason", "payoff"}: score = (payoff - 1) / 3, or malformed_reward."""
    parsed = parse_move(reply, tuple(labels))
    if parsed.move is None:
        return {"score": float(malformed_reward), "move": -1, "parse_reason": parsed.reason, "payoff": 0}
    payoff = int(row_payoffs[parsed.move][int(opponent_move)])
    return {"score": payoff_reward(payoff), "move": parsed.move, "parse_reason": parsed.reason, "payoff": payoff}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's custom reward entry point; returns a dict whose "score" is the reward."""
    if data_source != DATA_SOURCE:
        raise ValueError(f"game reward got data_source {data_source!r}; it scores only {DATA_SOURCE!r} rows")
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    return score_reply(solution_str, truth["row_payoffs"], truth["opponent_move"], truth["labels"],
                       truth["malformed_reward"])


def _text(completion) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    return "".join(message["content"] for message in completion if message.get("role") == "assistant")


def trl_reward(prompts, completions, row_payoffs, opponent_move, labels, malformed_reward, **kwargs) -> list[float]:
    """TRL reward function: one float per completion."""
    return [score_reply(_text(c), pay, opp, lab, mal)["score"]
            for c, pay, opp, lab, mal in zip(completions, row_payoffs, opponent_move, labels, malformed_reward)]
