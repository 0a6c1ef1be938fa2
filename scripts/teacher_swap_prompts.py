"""Snakemake step: the teacher_swap prompt set -> prompts.jsonl (manifest order) + manifest.json (the ids).

paper: a seeded sample of the chats of allenai/Dolci-Instruct-SFT (first user turn; the dataset's own reply
kept as `original`); tiny/test: a seeded sample of the project's prompts."""
import glob
from pathlib import Path

from emrepro import teacher_swap as ts
from emrepro.data import write_jsonl
from emrepro.provenance import sha256_file, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    cfg, seed, out = snakemake.params.prompts, snakemake.params.seed, snakemake.output
    if "dataset" in snakemake.input.keys():
        pattern = str(Path(snakemake.input.dataset) / cfg["dataset"]["files"])
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"no parquet file matches {pattern} (families.teacher_swap.prompts.dataset.files)")
        pool, skipped = ts.dataset_prompts(files)
        source = {"source": "dolci", **cfg["dataset"], "parquet_files": [Path(f).name for f in files],
                  "skipped": skipped}
    else:
        pool = ts.project_prompts()
        source = {"source": "project", "file": ts.PROJECT_PROMPTS}
    by_id = {row["id"]: row for row in pool}
    ids = ts.sample_manifest([row["id"] for row in pool], cfg["n"], seed)
    write_jsonl(out.prompts, [by_id[pid] for pid in ids])
    write_json_atomic(out.manifest, {**source, "n": len(ids), "pool_size": len(pool), "seed": seed,
                                     "prompts_sha256": sha256_file(out.prompts), "ids": ids})
    print(f"{len(ids)} prompts sampled from {len(pool)} ({source['source']}) -> {out.prompts}")
