"""Snakemake step: files of a Hugging Face dataset repository at a pinned revision (huggingface_hub), with
the commit and every file's sha256 recorded."""
import time

from emrepro.acquire import hub_snapshot, pin_hub_revision
from emrepro.provenance import file_digests, run_info, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    started = time.time()
    spec, out = snakemake.params.dataset, snakemake.output
    commit = pin_hub_revision(spec["repo_id"], spec["revision"], snakemake.params.lockfile, repo_type="dataset")
    hub_snapshot(spec["repo_id"], commit, out.folder, repo_type="dataset", allow_patterns=[spec["files"]])
    digests = file_digests(out.folder)
    if not any(name.endswith(".parquet") for name in digests):
        raise FileNotFoundError(f"dataset {spec['repo_id']}@{commit}: no parquet file matches {spec['files']!r}")
    write_json_atomic(out.run, run_info({"dataset": spec}, {}, started,
                                        extra={"commit": commit, "files_sha256": digests}))
    print(f"{spec['repo_id']}@{commit}: {len(digests)} files -> {out.folder}")
