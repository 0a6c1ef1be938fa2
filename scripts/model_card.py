"""Snakemake step: the model-card folder of a trained model (exactly what would be pushed)."""
from pathlib import Path

from emrepro import hub, report
from emrepro.probes import load_questions
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    p, wc = snakemake.params, snakemake.wildcards
    answers = report.load_answers({wc.label: snakemake.input.evals[0]})
    summary = []
    for path in snakemake.input.questions:  # one block of EM rates per probe set (EM probes, game-theory, ...)
        probe_set = Path(path).stem
        ids = {q.id for q in load_questions(path)}
        subset = answers[answers["question_id"].isin(ids)]
        if subset.empty:
            continue
        overall = report.em_overall(subset, p.eval["bootstrap_samples"], p.seed, p.eval["min_coherent_answers"])
        summary += [dict(row, dataset_type=f"emrepro/{probe_set}", dataset_name=f"{probe_set} probes")
                    for row in overall.to_dict("records")]
    repo = hub.repo_id(p.namespace, wc.family, wc.label, p.scale)
    base_id = p.base_spec.get("repo_id") or p.base_spec.get("hub_id")  # None for a random-init micro model
    hub.build_card_folder(snakemake.input.model, snakemake.output[0], repo, summary, base_id, [], wc.family)
    print(f"card folder for {repo} written")
