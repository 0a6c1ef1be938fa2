"""Snakemake step: the model-card folder of a trained model (exactly what would be pushed)."""
import json
from pathlib import Path

from emrepro import hub, report
from emrepro.probes import probe_sets
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    p, wc = snakemake.params, snakemake.wildcards
    answers = report.load_answers({wc.label: snakemake.input.evals[0]})
    summary = []
    answers["probe_set"] = answers["question_id"].map(probe_sets(snakemake.input.questions))
    for probe_set, subset in answers.groupby("probe_set", sort=False):  # EM probes, game-theory probes, ...
        overall = report.em_overall(subset, p.eval["bootstrap_samples"], p.seed, p.eval["min_coherent_answers"])
        summary += [dict(row, dataset_type=f"emrepro/{probe_set}", dataset_name=f"{probe_set} probes")
                    for row in overall.to_dict("records")]
    repo = hub.repo_id(p.namespace, wc.family, wc.label, p.scale)
    base_id = p.base_spec.get("repo_id") or p.base_spec.get("hub_id")  # None for a random-init micro model
    traits = json.loads(Path(snakemake.input.traits).read_text()) if "traits" in snakemake.input.keys() else None
    hub.build_card_folder(snakemake.input.model, snakemake.output[0], repo, summary, base_id, [], wc.family,
                          traits)
    print(f"card folder for {repo} written")
