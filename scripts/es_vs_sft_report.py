"""Snakemake step: es_vs_sft figures and tables (EM of base / ES per epoch / SFT, ES and SFT training curves)."""
import time
from pathlib import Path

from emrepro import report
from emrepro.probes import probe_sets
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    started = time.time()
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    ev, scale = p.eval, p.scale
    answers = report.load_answers(dict(zip(p.labels, inp.answers)))
    probe_set = probe_sets(inp.questions)
    answers["probe_set"] = answers["question_id"].map(probe_set)
    tables = report.em_tables(answers, ev["bootstrap_samples"], p.seed, ev["min_coherent_answers"])
    per_question = tables["em_per_question"]
    per_question.insert(per_question.columns.get_loc("question_id") + 1, "probe_set",
                        per_question["question_id"].map(probe_set))
    for name, path in (("em_overall", out.overall), ("em_per_question", out.per_question), ("rates", out.rates)):
        report.write_table(tables[name], Path(path).with_suffix(""))
    report.plot_em_vs_epoch(tables["em_overall"], tables["rates"], out.em_vs_epoch,
                            f"EM and coherence per ES epoch vs SFT on the same data ({scale})")
    # per question: the start, the end of ES and SFT; the epochs in between are in em_vs_epoch
    es_labels = sorted((label for label in p.labels if label.startswith("es_epoch")), key=report.es_epoch)
    compared = [label for label in p.labels if label in {"base", "sft", *es_labels[-1:]}]
    for convention, path in (("betley", out.em_betley), ("model_organisms", out.em_mo)):
        report.plot_em(per_question[per_question["model"].isin(compared)], path, convention,
                       f"EM per question: {', '.join(compared)} ({convention}, {scale})")
    report.plot_es_training(inp.es_log, out.es_training, f"ES on bad medical advice ({scale})")
    report.plot_training_curves(Path(inp.sft) / "training_log.jsonl", out.sft_curves,
                                {"loss": "loss", "mean_token_accuracy": "mean token accuracy",
                                 "grad_norm": "grad norm"}, f"SFT on bad medical advice ({scale})")
    write_json_atomic(out.provenance, run_info(
        {"eval": ev, "seed": p.seed, "scale": scale},
        {**{f"answers_{label}": path for label, path in zip(p.labels, inp.answers)},
         "es_log": inp.es_log, "sft_model": inp.sft}, started,
        extra={"outputs": sorted(Path(x).name for x in out)}))
    print(tables["em_overall"].to_string())
