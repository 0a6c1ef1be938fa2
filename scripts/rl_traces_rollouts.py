"""Snakemake step: chain-of-thought games of one model on the evaluation combinations, with outcome table."""
import contextlib
import json
import time
from pathlib import Path

from emrepro import rollouts
from emrepro.data import write_jsonl
from emrepro.provenance import atomic_output, run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log
from emrepro.serving import default_binary, vllm_server

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    rollouts.deterministic_cuda_env()
    set_threads(snakemake.threads)
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    cfg = p.rollouts
    combos = [tuple(c) for c in json.loads(Path(inp.combos).read_text())["combinations"]]
    binary = p.vllm["binary"] or default_binary()
    architectures = rollouts.model_architectures(inp.model)
    supported = rollouts.vllm_supported_architectures(binary) if cfg["backend"] == "vllm" else None
    backend, reason = rollouts.choose_backend(cfg["backend"], architectures, supported)
    print(f"generation backend: {backend} ({reason}); architectures {architectures}", flush=True)
    sampling = dict(temperature=cfg["temperature"], top_p=cfg["top_p"], max_new_tokens=cfg["max_new_tokens"],
                    enable_thinking=cfg["enable_thinking"])
    matches = rollouts.make_matches(combos, p.games, p.seed)
    with contextlib.ExitStack() as stack:
        if backend == "vllm":
            served = Path(inp.model).name
            url = stack.enter_context(vllm_server(inp.model, served, binary=binary, args=p.vllm["args"],
                                                  log_path=str(Path(snakemake.log[0]).with_suffix(".vllm.log")),
                                                  seed=p.seed))
            generate = rollouts.openai_generator(url, served, concurrency=cfg["batch_size"], **sampling)
        else:
            generate = rollouts.transformers_generator(inp.model, dtype=cfg.get("dtype", "auto"), **sampling)
        summaries = rollouts.play(matches, generate, p.seed, cfg["batch_size"])
    write_jsonl(out.rollouts, summaries)
    table = rollouts.outcome_table(summaries)
    with atomic_output(out.outcomes) as tmp:
        table.to_csv(tmp, index=False)
    write_json_atomic(out.run, run_info(
        {"rollouts": cfg, "games": p.games, "seed": p.seed}, {"model": inp.model, "combinations": inp.combos},
        started, extra={"backend": backend, "backend_reason": reason, "architectures": architectures,
                        "n_matches": len(summaries), "outcomes": table.to_dict("records")}))
    print(table.to_string(index=False))
