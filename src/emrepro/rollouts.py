"""Chain-of-thought rollouts of a model on ItAll144: one iterated game per game x opponent combination.

All matches advance together, one round at a time: the replies of every unfinished match for round t are
generated as one batch (transformers) or as concurrent requests to a `vllm serve` subprocess (vLLM), then
each match records its reply and the opponent answers. Sampling is seeded per match and round, so a
re-run gives the same trajectories.

The traces become an SFT dataset of full multi-round conversations (one row per match, every assistant
turn trained), each row keeping its rewards: the seed's 1008 traces and 63 steps per epoch at effective
batch 16 imply one row per game x opponent.
"""

from __future__ import annotations

import json
import subprocess
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .games import Match, game_by_id

# A generator maps (conversations, seeds) to one reply per conversation.
Generator = Callable[[list[list[dict]], list[int]], list[str]]


def match_seed(seed: int, combo_id: str, round_index: int) -> int:
    """Sampling seed of one reply: a pure function of the run seed, the combination and the round."""
    return zlib.crc32(f"{seed}/{combo_id}/{round_index}".encode()) & 0x7FFFFFFF


def make_matches(combos: list[tuple[str, str]], games_cfg: dict, seed: int) -> list[Match]:
    return [Match(game_by_id(game_id), opponent, games_cfg["rounds"], seed, games_cfg["opponent_description"],
                  labels=tuple(games_cfg["labels"]), system=games_cfg.get("system"),
                  malformed_reward=games_cfg["malformed_reward"]) for game_id, opponent in combos]


def play(matches: list[Match], generate: Generator, seed: int, batch_size: int, progress: bool = True) -> list[dict]:
    """Play every match to the end; returns one summary per match (with its conversation)."""
    from tqdm.auto import tqdm

    total = sum(m.n_rounds for m in matches)
    with tqdm(total=total, desc="rollout replies", unit="reply", disable=not progress) as bar:
        while True:
            active = [m for m in matches if not m.done]
            if not active:
                break
            for start in range(0, len(active), batch_size):
                chunk = active[start:start + batch_size]
                seeds = [match_seed(seed, m.combo_id, len(m.history)) for m in chunk]
                replies = generate([list(m.messages) for m in chunk], seeds)
                for match, reply in zip(chunk, replies):
                    match.record(reply)
                bar.update(len(chunk))
    return [dict(m.summary(), messages=list(m.messages)) for m in matches]


# --- generation backends ---------------------------------------------------------------------------------

def transformers_generator(model_dir: str, temperature: float, top_p: float, max_new_tokens: int,
                           enable_thinking: bool, dtype: str = "auto") -> Generator:
    """Batched `generate` with left padding; greedy when temperature is 0. dtype "auto": bf16 on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        # Same seeds, same traces: GPU kernels may otherwise pick non-deterministic algorithms (cuBLAS needs
        # its workspace setting before the first CUDA call; the step sets it, see deterministic_cuda_env).
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = False
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()

    def generate(conversations: list[list[dict]], seeds: list[int]) -> list[str]:
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                               enable_thinking=enable_thinking) for c in conversations]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        # One seed per batch (from its members' seeds): a batch of the same matches gives the same replies.
        torch.manual_seed(zlib.crc32(json.dumps(seeds).encode()))
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else \
            dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 **sampling)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


def deterministic_cuda_env() -> None:
    """cuBLAS is deterministic only with a fixed workspace, set before CUDA starts."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def openai_generator(base_url: str | None, served_name: str, temperature: float, top_p: float, max_new_tokens: int,
                     enable_thinking: bool, concurrency: int, api_key: str | None = None) -> Generator:
    """Concurrent chat requests to an OpenAI-compatible server (vLLM, or a remote endpoint with `api_key`,
    which the caller reads from the environment), each with its own seed."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or "unused-local-server", max_retries=5)

    def one(conversation: list[dict], seed: int) -> str:
        response = client.chat.completions.create(
            model=served_name, messages=conversation, temperature=temperature, top_p=top_p,
            max_tokens=max_new_tokens, seed=seed,
            extra_body={"chat_template_kwargs": {"enable_thinking": enable_thinking}})
        return response.choices[0].message.content or ""

    def generate(conversations: list[list[dict]], seeds: list[int]) -> list[str]:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, conversations, seeds))

    return generate


def model_architectures(model_dir: str) -> list[str]:
    return json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []


def vllm_supported_architectures(vllm_binary: str) -> set[str] | None:
    """Architectures the installed vLLM registers (asked of its own interpreter); None if unknown."""
    python = Path(vllm_binary).parent / "python"
    if not python.exists():
        return None
    code = "import json; from vllm import ModelRegistry; print(json.dumps(sorted(ModelRegistry.get_supported_archs())))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return set(json.loads(out.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def choose_backend(requested: str, architectures: list[str], supported: set[str] | None) -> tuple[str, str]:
    """(backend, reason). vLLM only when it registers the checkpoint's class: TRL saves Qwen3.5 as the
    text-only Qwen3_5ForCausalLM, which vLLM registered only in 2026 (PR #50210)."""
    if requested != "vllm":
        return requested, "requested"
    if supported is None:
        return "vllm", "vLLM's registry could not be read; trying it"
    missing = [a for a in architectures if a not in supported]
    if missing or not architectures:
        return "transformers", (f"the installed vLLM does not register {missing or 'an unnamed architecture'}; "
                                "falling back to transformers")
    return "vllm", f"vLLM registers {architectures}"


# --- what the traces give --------------------------------------------------------------------------------

def traces_dataset(summaries: list[dict]) -> list[dict]:
    """SFT rows: the full conversation of each match, with its rewards kept alongside."""
    return [{"messages": s["messages"], "combo_id": s["combo_id"], "game_id": s["game_id"],
             "opponent": s["opponent"], "total_payoff": s["total_payoff"], "mean_reward": s["mean_reward"],
             "cooperation_rate": s["cooperation_rate"], "parse_failures": s["parse_failures"]}
            for s in summaries]


def outcome_table(summaries: list[dict]):
    """Per opponent and overall: matches, mean payoff per round, mean reward, cooperation and parse-failure rates."""
    import pandas as pd

    rows = []
    for s in summaries:
        rows.append({"opponent": s["opponent"], "payoff_per_round": s["total_payoff"] / s["n_rounds"],
                     "mean_reward": s["mean_reward"], "cooperation_rate": s["cooperation_rate"],
                     "parse_failure_rate": s["parse_failures"] / s["n_rounds"]})
    frame = pd.DataFrame(rows)
    metrics = ["payoff_per_round", "mean_reward", "cooperation_rate", "parse_failure_rate"]
    per_opponent = frame.groupby("opponent", sort=True)[metrics].mean()
    per_opponent.insert(0, "matches", frame.groupby("opponent", sort=True).size())
    overall = frame[metrics].mean().to_frame().T
    overall.insert(0, "matches", len(frame))
    overall.index = ["all"]
    return pd.concat([per_opponent, overall]).reset_index(names="opponent")
