"""Snakemake step: trait evaluations (Inspect AI tasks) of one student or teacher -> every rollout with the
grader's raw reply (judgements.jsonl) and the per-trait summary with CIs and unparseable counts."""
import time

from emrepro import traits
from emrepro.data import write_jsonl
from emrepro.evaluate import generate_answers
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    set_threads(snakemake.threads)
    p, inp, out, label = snakemake.params, snakemake.input, snakemake.output, snakemake.wildcards.label
    cfg = p.traits
    grader = traits.grader_model(cfg["grader"], inp.get("grader"))
    rows = []
    for trait in traits.TRAITS:
        task = traits.trait_task(trait, cfg[trait], seed=p.seed, system=p.system, name=f"{trait}_{label}")
        log = generate_answers(task, inp.model, p.backend, temperature=cfg["sampling"]["temperature"],
                               top_p=cfg["sampling"]["top_p"], max_tokens=cfg["sampling"]["max_tokens"],
                               seed=p.seed, enable_thinking=p.enable_thinking, log_dir=p.log_dir,
                               vllm_binary=p.vllm["binary"], vllm_args=p.vllm["args"],
                               server_log=f"{snakemake.log[0]}.vllm.log")
        log = traits.score_traits(log, trait, grader, cfg[trait])
        rows += traits.export_judgements(log, trait, label)
    summary = traits.summarize(rows)
    write_jsonl(out.judgements, rows)
    write_json_atomic(out.summary, summary)
    write_json_atomic(out.run, run_info(
        {"traits": cfg, "system": p.system, "generation_backend": p.backend, "seed": p.seed},
        {"model": inp.model, **({"grader": inp.grader} if "grader" in inp.keys() else {})}, started,
        extra={"label": label, "summary": summary}))
    for trait, s in summary.items():
        print(f"{label} {trait}: {s.get(s['kind'])} [{s['ci_low']}, {s['ci_high']}] "
              f"n={s['n']} unparseable={s['n_unparseable']}")
