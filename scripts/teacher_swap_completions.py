"""Snakemake step: one teacher's completions of the manifest prompts -> completions/<teacher>.jsonl.

Completions live in a cache (one file per teacher identity, see teacher_swap.cache_key) that outlives
this step: only prompts the teacher has not answered are generated, chunk by chunk, so a killed run keeps
what it made and adding prompts, teachers or variants never regenerates existing completions."""
import contextlib
import os
import time
from pathlib import Path

from tqdm import tqdm

from emrepro import rollouts
from emrepro import teacher_swap as ts
from emrepro.data import read_jsonl, write_jsonl
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import offline_hub, set_threads, step_log
from emrepro.serving import default_binary, vllm_server

with step_log(snakemake.log[0]):
    started = time.time()
    offline_hub()
    rollouts.deterministic_cuda_env()
    set_threads(snakemake.threads)
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    teacher, gen, name = p.teacher, p.generation, p.teacher["name"]
    prompt_rows = read_jsonl(inp.prompts)
    prompts = {row["id"]: row["prompt"] for row in prompt_rows}
    info = {"kind": teacher["kind"]}
    if teacher["kind"] == "dataset":
        missing = [row["id"] for row in prompt_rows if not row.get("original")]
        if missing:
            raise ValueError(f"teacher {name!r} (kind dataset): {len(missing)} prompts have no assistant reply in the "
                             f"dataset, e.g. {missing[:5]}")
        rows = [{"prompt_id": row["id"], "completion": row["original"]} for row in prompt_rows]
        generated = 0
    else:
        model_digest = ts.model_digest(inp.model) if "model" in inp.keys() else teacher["model"]
        cache = ts.CompletionCache(p.cache_dir)
        key = ts.cache_key(teacher, gen, p.seed, model_digest)
        todo = cache.missing(key, list(prompts))
        print(f"teacher {name}: {len(prompts) - len(todo)} of {len(prompts)} completions cached ({cache.path(key)})")
        sampling = dict(temperature=gen["temperature"], top_p=gen["top_p"], max_new_tokens=gen["max_new_tokens"],
                        enable_thinking=gen["enable_thinking"])
        with contextlib.ExitStack() as stack:
            if todo and teacher["kind"] == "openai":
                generate_chat = rollouts.openai_generator(teacher.get("base_url"), teacher["model"],
                                                          concurrency=gen["batch_size"],
                                                          api_key=os.environ.get("OPENAI_API_KEY"), **sampling)
            elif todo:
                binary = p.vllm["binary"] or default_binary()
                architectures = rollouts.model_architectures(inp.model)
                supported = rollouts.vllm_supported_architectures(binary) if gen["backend"] == "vllm" else None
                backend, reason = rollouts.choose_backend(gen["backend"], architectures, supported)
                info.update(backend=backend, backend_reason=reason)
                print(f"generation backend: {backend} ({reason})", flush=True)
                if backend == "vllm":
                    served = Path(inp.model).name
                    url = stack.enter_context(vllm_server(
                        inp.model, served, binary=binary, args=p.vllm["args"], seed=p.seed,
                        log_path=str(Path(snakemake.log[0]).with_suffix(".vllm.log"))))
                    generate_chat = rollouts.openai_generator(url, served, concurrency=gen["batch_size"], **sampling)
                else:
                    generate_chat = rollouts.transformers_generator(inp.model, **sampling)
            generated = 0
            chunk = gen["batch_size"]
            with tqdm(total=len(todo), desc=f"teacher {name}", unit="completion") as bar:
                for start in range(0, len(todo), chunk):
                    ids = todo[start:start + chunk]
                    seeds = [ts.derive_seed(p.seed, f"{name}/{pid}") % 2**31 for pid in ids]

                    def generate(texts, seeds=seeds):
                        return generate_chat([ts.teacher_messages(t, teacher.get("system")) for t in texts], seeds)

                    generated += ts.fill(cache, key, {pid: prompts[pid] for pid in ids}, generate)
                    bar.update(len(ids))
        cached = cache.get(key, list(prompts))
        rows = [{"prompt_id": pid, "completion": cached[pid]["completion"]} for pid in prompts]
        info.update(cache_file=str(cache.path(key)), model_digest=model_digest)
    write_jsonl(out.completions, rows)
    write_json_atomic(out.run, run_info(
        {"teacher": teacher, "generation": gen, "seed": p.seed},
        {"prompts": inp.prompts, **({"model": inp.model} if "model" in inp.keys() else {})}, started,
        extra={**info, "n_prompts": len(rows), "n_generated": generated, "n_reused": len(rows) - generated}))
    print(f"teacher {name}: {generated} generated, {len(rows) - generated} reused -> {out.completions}")
