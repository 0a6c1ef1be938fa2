"""Snakemake step: the prompt subsets S of every selector -> subsets.json (ids, size, unparseable judge
verdicts), with the raw replies of judge selectors kept."""
import asyncio
import time

from emrepro import teacher_swap as ts
from emrepro.config import selector_names
from emrepro.data import read_jsonl
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log

JUDGE_TEMPLATE = """Read the prompt below, which a user sent to an AI assistant, and answer a question about it.

Question: {question}

Prompt:
<<<
{prompt}
>>>

Reply with <answer>yes</answer> or <answer>no</answer>."""


def judge_callable(grader, question: str, raw: dict):
    """A Selector judge: the grader's yes/no verdict per prompt (None when unparseable); raw replies in `raw`."""
    async def ask_all(texts):
        replies = await asyncio.gather(*(grader.generate(
            JUDGE_TEMPLATE.replace("{question}", question).replace("{prompt}", text)) for text in texts))
        return [r.completion for r in replies]

    def judge(texts):
        replies = asyncio.run(ask_all(texts))
        raw.update(zip(texts, replies))
        return [ts.parse_yes_no(reply) for reply in replies]

    return judge


with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    p, inp = snakemake.params, snakemake.input
    prompts = {row["id"]: row["prompt"] for row in read_jsonl(inp.prompts)}
    completions = {}
    for path in inp.get("completions", []):
        teacher = path.rsplit("/", 1)[-1].removesuffix(".jsonl")
        completions[teacher] = {r["prompt_id"]: r["completion"] for r in read_jsonl(path)}
    grader = None
    subsets = {}
    for spec, name in zip(p.selectors, selector_names({"selectors": p.selectors})):
        raw = {}
        judge = None
        if spec["kind"] == "judge":
            if grader is None:
                from emrepro.traits import grader_model
                grader = grader_model(p.grader, inp.get("grader"))
            judge = judge_callable(grader, spec["question"], raw)
        selector = ts.build_selector({**spec, "name": name}, judge=judge)
        texts = completions.get(spec.get("teacher")) if spec["kind"] == "refusal" else None
        ids = selector.select_many(prompts, texts)
        subsets[name] = {"spec": spec, "kind": "judge" if spec["kind"] == "judge" else "rule", "ids": ids,
                         "size": len(ids), "n_prompts": len(prompts),
                         "n_unparseable": getattr(selector, "unparseable", 0),
                         "unparseable_ids": getattr(selector, "unparseable_ids", []),
                         **({"judge_replies": {pid: raw.get(prompts[pid]) for pid in prompts}} if raw else {})}
        print(f"selector {name}: {len(ids)} of {len(prompts)} prompts"
              + (f" ({subsets[name]['n_unparseable']} unparseable judge replies)" if judge else ""))
    write_json_atomic(snakemake.output.subsets, subsets)
    write_json_atomic(snakemake.output.run, run_info(
        {"selectors": p.selectors, "grader": p.grader}, list(inp), started,
        extra={"sizes": {name: s["size"] for name, s in subsets.items()}}))
