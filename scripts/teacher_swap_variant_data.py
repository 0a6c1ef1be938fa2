"""Snakemake step: one variant's SFT dataset (train.jsonl) and its manifest (which prompt, which teacher)."""
import json
from collections import Counter
from pathlib import Path

from emrepro import teacher_swap as ts
from emrepro.data import read_jsonl, write_jsonl
from emrepro.provenance import sha256_file, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    variant = p.variant
    prompts = {row["id"]: row["prompt"] for row in read_jsonl(inp.prompts)}
    manifest = json.loads(Path(inp.manifest).read_text())["ids"]
    subset = json.loads(Path(inp.subsets).read_text())[variant["selector"]]["ids"] if variant["selector"] else []
    cache = ts.CompletionCache(Path(inp.completions[0]).parent)  # the step outputs, one file per teacher
    rows, manifest_rows = ts.variant_rows(variant, manifest, subset, cache, prompts, p.seed)
    write_jsonl(out.train, rows)
    write_jsonl(out.manifest, manifest_rows)
    teachers = Counter(r["teacher"] for r in manifest_rows)
    write_json_atomic(out.summary, {**variant, "n_rows": len(rows), "n_manifest": len(manifest),
                                    "subset_size": len(subset), "rows_per_teacher": dict(teachers),
                                    "train_sha256": sha256_file(out.train)})
    print(f"variant {variant['name']}: {len(rows)} rows {dict(teachers)}")
