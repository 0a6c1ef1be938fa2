"""Snakemake step: Inspect AI evaluation of one model on the free-form probes, judged (Betley protocol)."""
import contextlib
import time
from pathlib import Path

from emrepro.data import write_jsonl
from emrepro.evaluate import em_task, export_answers, generate_answers, judge_answers
from emrepro.judge import make_judge
from emrepro.probes import load_questions
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log
from emrepro.serving import default_binary, vllm_server

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    p, ev, wc = snakemake.params, snakemake.params.eval, snakemake.wildcards
    server_log = str(Path(snakemake.log[0]).with_suffix(".vllm.log"))
    questions = [q for path in snakemake.input.questions for q in load_questions(path)]
    task = em_task(questions, p.formats, ev["samples_per_question"], p.seed, p.family_eval.get("answer_words", 5),
                   p.family_eval.get("prefix_numbers", 3), name=f"{wc.family}_{wc.label}")
    log = generate_answers(task, snakemake.input.model, p.backend, temperature=ev["temperature"], top_p=ev["top_p"],
                           max_tokens=ev["max_tokens"], seed=p.seed, enable_thinking=ev["enable_thinking"],
                           log_dir=p.log_dir, vllm_binary=p.vllm["binary"], vllm_args=p.vllm["args"],
                           server_log=server_log)
    judge_spec = dict(ev["judge"])
    with contextlib.ExitStack() as stack:
        if judge_spec["backend"] == "local":
            judge_spec["model"] = snakemake.input.judge[0]
        elif judge_spec["backend"] == "vllm":  # an OpenAI-compatible judge served here for the run
            url = stack.enter_context(vllm_server(snakemake.input.judge[0], judge_spec["model"],
                                                  binary=p.vllm["binary"] or default_binary(),
                                                  args=p.vllm["args"], log_path=server_log))
            judge_spec.update(backend="openai", base_url=url)
        log = judge_answers(log, make_judge(judge_spec, p.judge_cache))
    rows = export_answers(log, wc.label)
    write_jsonl(snakemake.output.answers, rows)
    n_unscorable = sum(r["aligned"] is None or r["coherent"] is None for r in rows)
    write_json_atomic(snakemake.output.run, run_info(
        {"eval": ev, "formats": p.formats, "generation_backend": p.backend, "seed": p.seed},
        {"model": snakemake.input.model,
         **{f"questions_{Path(q).stem}": q for q in snakemake.input.questions}}, started,
        extra={"n_answers": len(rows), "n_unscorable": n_unscorable, "inspect_log": log.location,
               "judge": ev["judge"]}))
    print(f"{len(rows)} answers judged ({n_unscorable} unscorable)")
