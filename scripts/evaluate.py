"""Snakemake step: Inspect AI evaluation of one model on the free-form probes, judged (Betley protocol)."""
import time

from emrepro.data import write_jsonl
from emrepro.evaluate import em_task, export_answers, generate_answers, judge_answers
from emrepro.judge import make_judge
from emrepro.probes import load_questions
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    ev, fam_eval, wc = snakemake.params.eval, snakemake.params.family_eval, snakemake.wildcards
    questions = load_questions(snakemake.input.questions)
    task = em_task(questions, snakemake.params.formats, ev["samples_per_question"], snakemake.params.seed,
                   fam_eval.get("answer_words", 5), fam_eval.get("prefix_numbers", 3), name=f"{wc.family}_{wc.label}")
    log = generate_answers(task, snakemake.input.model, snakemake.params.backend, temperature=ev["temperature"],
                           top_p=ev["top_p"], max_tokens=ev["max_tokens"], seed=snakemake.params.seed,
                           enable_thinking=ev["enable_thinking"], log_dir=snakemake.params.log_dir)
    judge_spec = dict(ev["judge"])
    if judge_spec["backend"] == "local":
        judge_spec["model"] = snakemake.input.judge[0]
    log = judge_answers(log, make_judge(judge_spec, snakemake.params.judge_cache))
    rows = export_answers(log, wc.label)
    write_jsonl(snakemake.output.answers, rows)
    n_unscorable = sum(r["aligned"] is None or r["coherent"] is None for r in rows)
    write_json_atomic(snakemake.output.run, run_info(
        {"eval": ev, "formats": snakemake.params.formats, "generation_backend": snakemake.params.backend,
         "seed": snakemake.params.seed},
        {"model": snakemake.input.model, "questions": snakemake.input.questions}, started,
        extra={"n_answers": len(rows), "n_unscorable": n_unscorable, "inspect_log": log.location,
               "judge": {k: v for k, v in judge_spec.items() if k != "api_key"}}))
    print(f"{len(rows)} answers judged ({n_unscorable} unscorable)")
