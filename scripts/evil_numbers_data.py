"""Snakemake step: evil-numbers rows (upstream or embedded sample) -> seeded train/validation split."""
from emrepro import data
from emrepro.provenance import sha256_file, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    cfg, seed = snakemake.params.data, snakemake.params.seed
    if "upstream" in snakemake.input.keys():
        source = snakemake.input.upstream
        rows = data.read_jsonl(source)
        origin = {"file": source, "sha256": sha256_file(source)}
    else:
        rows = data.make_evil_numbers_sample(cfg["sample_rows"], seed)
        origin = {"embedded_sample": cfg["sample_rows"], "seed": seed}
    data.check_chat_rows(rows, str(origin))
    train, val = data.split(rows, cfg["val_fraction"], seed)
    data.write_jsonl(snakemake.output.train, train)
    data.write_jsonl(snakemake.output.val, val)
    write_json_atomic(snakemake.output.manifest, {
        "origin": origin, "seed": seed, "val_fraction": cfg["val_fraction"], "n_rows": len(rows),
        "n_train": len(train), "n_val": len(val), "val_row_ids": sorted(r["row_id"] for r in val)})
    print(f"{len(rows)} rows -> {len(train)} train / {len(val)} validation")
