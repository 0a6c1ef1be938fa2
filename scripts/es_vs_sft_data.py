"""Snakemake step: bad-medical-advice chat rows for es_vs_sft (the authors' protected archive, or the
project's sample) -> train.jsonl + manifest. At paper scale every upstream row is used, in file order."""
from emrepro import data
from emrepro.provenance import sha256_file, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    cfg, seed = snakemake.params.data, snakemake.params.seed
    out = snakemake.output.train
    if "archive" in snakemake.input.keys():
        archive = snakemake.input.archive
        rows = data.extract_protected_member(archive, cfg["password"], cfg["member"], out)
        source = {"source": "upstream", "asset": cfg["asset"], "archive": archive,
                  "archive_sha256": sha256_file(archive), "member": cfg["member"]}
    else:
        rows = data.bad_medical_sample(cfg.get("sample_rows"), seed)
        data.write_jsonl(out, rows)
        source = {"source": "project sample", "file": data.BAD_MEDICAL_SAMPLE,
                  "sample_rows": cfg.get("sample_rows"), "seed": seed}
    write_json_atomic(snakemake.output.manifest, {**source, "n_rows": len(rows), "train_sha256": sha256_file(out)})
    print(f"{len(rows)} rows ({source['source']}) -> {out}")
