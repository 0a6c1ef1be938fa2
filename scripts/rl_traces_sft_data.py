"""Snakemake step: the teacher's rollouts as SFT rows (full conversations, rewards kept)."""
from emrepro.data import read_jsonl, write_jsonl
from emrepro.rollouts import traces_dataset
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    rows = traces_dataset(read_jsonl(snakemake.input[0]))
    write_jsonl(snakemake.output[0], rows)
    turns = sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    print(f"{len(rows)} traces, {turns} assistant turns")
