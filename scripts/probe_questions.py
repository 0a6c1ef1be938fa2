"""Snakemake step: select the free-form probes (upstream file or embedded set) into one question file."""
import yaml

from emrepro.probes import embedded_path, load_questions
from emrepro.provenance import atomic_output
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    probe = snakemake.params.probe
    source = snakemake.input.questions if "asset" in probe else embedded_path(probe["embedded"])
    questions = load_questions(source, ids=probe.get("ids"), ids_suffix=probe.get("ids_suffix"),
                               limit=snakemake.params.limit)
    entries = []
    for q in questions:
        entry = {"id": q.id, "type": "free_form_judge_0_100", "paraphrases": q.paraphrases,
                 "judge_prompts": q.judge_prompts, "source": f"{snakemake.params.name}: {source}"}
        if q.system:
            entry["system"] = q.system
        entries.append(entry)
    with atomic_output(snakemake.output[0]) as tmp:
        with open(tmp, "w") as handle:
            yaml.safe_dump(entries, handle, sort_keys=False, allow_unicode=True, width=120)
    print(f"{len(entries)} questions from {source}: {', '.join(q.id for q in questions)}")
