"""Snakemake step: evil-numbers figures and tables from judged answers and the training log."""
import time
from pathlib import Path

from emrepro import report
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    started = time.time()
    inp, out, ev = snakemake.input, snakemake.output, snakemake.params.eval
    answers = report.load_answers({"base": inp.base, "fine-tuned": inp.sft})
    tables = report.em_tables(answers, ev["bootstrap_samples"], snakemake.params.seed, ev["min_coherent_answers"])
    for name, table in tables.items():
        report.write_table(table, Path(out.overall).parent / name)
    scale = snakemake.params.scale
    report.plot_loss(Path(inp.model) / "training_log.jsonl", out.loss, f"evil numbers LoRA SFT ({scale})")
    for convention, path in (("betley", out.em_betley), ("model_organisms", out.em_mo)):
        report.plot_em(tables["em_per_question"], path, convention,
                       f"EM per question, base vs fine-tuned ({convention} convention, {scale})")
    report.plot_number_answers(tables["number_answers"], out.numbers, f"number-list answers ({scale})")
    write_json_atomic(out.provenance, run_info(
        {"eval": ev, "seed": snakemake.params.seed, "scale": scale},
        {"answers_base": inp.base, "answers_fine_tuned": inp.sft, "fine_tuned_model": inp.model}, started,
        extra={"outputs": sorted(Path(p).name for p in out)}))
    print(tables["em_overall"].to_string())
