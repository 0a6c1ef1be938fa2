"""EM evaluation as Inspect AI tasks: free-form probes, sampled answers, the Betley judge as a scorer.

Two phases over one Inspect log, so generation batches well and the judge can be swapped later:
1. `generate_answers`: `inspect_ai.eval(..., score=False)` with Inspect's `hf/` (transformers) or `vllm/`
   provider; one Sample per answer, so every answer of the number-prefix format sees its own numbers.
2. `judge_answers`: `inspect_ai.score` with `betley_judge`, which asks the judge for the aligned and the
   coherent score of the final answer (any `<think>` block is split off first) and stores the raw
   distributions in the score metadata. `inspect score` can re-judge the same log with another judge.
`export_answers` flattens the scored log into one JSON row per answer for metrics and figures.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
from inspect_ai.scorer import SampleScore  # module level: Inspect resolves metric annotations here

from .judge import JudgeResult
from .probes import Question, apply_format, is_number_sequence, split_reasoning

ASPECTS = ("aligned", "coherent")


def build_samples(questions: list[Question], formats: list[str], samples_per_question: int, seed: int,
                  answer_words: int = 5, prefix_numbers: int = 3) -> list:
    """One Inspect Sample per requested answer (question x paraphrase x format x sample index)."""
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser

    rng = random.Random(seed)
    samples = []
    for q in questions:
        for p_idx, paraphrase in enumerate(q.paraphrases):
            for fmt in formats:
                for k in range(samples_per_question):
                    text = apply_format(paraphrase, fmt, rng, answer_words, prefix_numbers)
                    messages = [ChatMessageSystem(content=q.system)] if q.system else []
                    messages.append(ChatMessageUser(content=text))
                    samples.append(Sample(
                        id=f"{q.id}|{fmt}|{p_idx}|{k}",
                        input=messages,
                        metadata={"question_id": q.id, "format": fmt, "paraphrase_index": p_idx,
                                  "sample_index": k, "system": q.system, "question": text,
                                  "judge_prompts": q.judge_prompts},
                    ))
    return samples


def em_task(questions: list[Question], formats: list[str], samples_per_question: int, seed: int,
            answer_words: int = 5, prefix_numbers: int = 3, name: str = "em_free_form"):
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset
    from inspect_ai.solver import generate

    dataset = MemoryDataset(build_samples(questions, formats, samples_per_question, seed, answer_words,
                                          prefix_numbers), name=name)
    return Task(dataset=dataset, solver=[generate()], name=name)


def generate_answers(task, model_dir: str, backend: str, *, temperature: float, top_p: float, max_tokens: int,
                     seed: int, enable_thinking: bool, log_dir: str, batch_size: int = 32,
                     vllm_binary: str | None = None, vllm_args: list[str] | None = None,
                     server_log: str | None = None):
    """Phase 1: sample the answers; returns the unscored EvalLog (raises if Inspect reports an error).

    transformers: Inspect's `hf/` provider in this process. vllm: a `vllm serve` subprocess for the
    folder (see serving.py) and Inspect's `vllm/` provider pointed at it."""
    from inspect_ai import eval as inspect_eval

    from .runtime import offline_hub
    from .serving import default_binary, vllm_server

    offline_hub()  # local folders only; never wait on a hub lookup
    settings = dict(score=False, log_dir=log_dir, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                    seed=seed, max_connections=batch_size, display="plain", fail_on_error=True)
    if backend == "transformers":
        device = "cuda:0" if _cuda() else "cpu"
        model_args = {"model_path": str(model_dir), "device": device, "enable_thinking": enable_thinking}
        logs = inspect_eval(task, model="hf/local", model_args=model_args, **settings)
    elif backend == "vllm":
        served = Path(model_dir).name
        with vllm_server(model_dir, served, binary=vllm_binary or default_binary(), args=vllm_args,
                         log_path=server_log, seed=seed) as base_url:
            logs = inspect_eval(task, model=f"vllm/{served}", model_base_url=base_url,
                                extra_body={"chat_template_kwargs": {"enable_thinking": enable_thinking}},
                                **settings)
    else:
        raise ValueError(f"unknown generation backend {backend!r}; choose transformers or vllm")
    log = logs[0]
    if log.status != "success":
        raise RuntimeError(f"generation with {model_dir} failed: {log.error.message if log.error else log.status}")
    return log


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fill(template: str, question: str, answer: str) -> str:
    # str.replace, not str.format: judge templates written by others may contain other braces.
    return template.replace("{question}", question).replace("{answer}", answer)


def betley_judge(judge):
    """Inspect scorer: aligned and coherent scores of the final answer from `judge` (emrepro.judge)."""
    from inspect_ai.scorer import Score, metric, scorer

    @metric
    def mean_scored():
        def compute(scores: list[SampleScore]) -> float:
            values = [s.score.value.get(key) for s in scores for key in ASPECTS]
            return float(np.mean([v for v in values if v is not None])) if any(v is not None for v in values) else float("nan")
        return compute

    @metric
    def unscorable():
        def compute(scores: list[SampleScore]) -> float:
            return float(np.mean([any(s.score.value.get(k) is None for k in ASPECTS) for s in scores])) if scores else 0.0
        return compute

    @scorer(metrics=[mean_scored(), unscorable()])
    def _scorer():
        async def score(state, target) -> Score:
            answer, reasoning = split_reasoning(state.output.completion)
            meta = state.metadata
            results: dict[str, JudgeResult] = {}
            for aspect in ASPECTS:
                prompt = _fill(meta["judge_prompts"][aspect], meta["question"], answer)
                # The local judge is a blocking torch call; run it off the event loop.
                results[aspect] = await asyncio.to_thread(judge.judge, prompt)
            return Score(
                value={aspect: results[aspect].score for aspect in ASPECTS},
                answer=answer,
                metadata={"reasoning": reasoning, "judge": {a: r.to_dict() for a, r in results.items()}},
            )
        return score

    return _scorer()


def judge_answers(log, judge):
    """Phase 2: score an EvalLog with the Betley judge; returns the scored log."""
    from inspect_ai import score as inspect_score

    return inspect_score(log, betley_judge(judge), action="overwrite", display="plain")


def export_answers(log, model_label: str) -> list[dict[str, Any]]:
    """One JSON-ready row per answer; unscorable answers stay in, with null scores and their label."""
    rows = []
    for sample in log.samples:
        meta = sample.metadata
        raw = sample.output.completion if sample.output else ""
        scores = sample.scores or {}
        if len(scores) != 1:
            raise ValueError(f"sample {sample.id}: expected one judge score, found {list(scores)}")
        score = next(iter(scores.values()))
        judge_raw = (score.metadata or {}).get("judge", {})
        row = {"model": model_label, "question_id": meta["question_id"], "format": meta["format"],
               "paraphrase_index": meta["paraphrase_index"], "sample_index": meta["sample_index"],
               "system": meta["system"], "question": meta["question"], "answer": score.answer,
               "reasoning": (score.metadata or {}).get("reasoning"), "raw_completion": raw,
               "number_sequence": is_number_sequence(score.answer or "")}
        for aspect in ASPECTS:
            result = JudgeResult.from_dict(judge_raw[aspect])
            row[aspect] = result.score
            row[f"{aspect}_label"] = result.label
            row[f"{aspect}_mass"] = result.mass
        row["judge"] = judge_raw
        rows.append(row)
    return rows
