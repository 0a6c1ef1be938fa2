"""Snakemake step: teacher_swap figures and tables (trait x variant matrix with CIs incl. EM, teacher vs student
scatter, subset sizes)."""
import json
import math
import time
from pathlib import Path

import pandas as pd

from emrepro import report
from emrepro import report_teacher_swap as rts
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import step_log


def em_summaries(overall: pd.DataFrame, answers: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """EM of every student under both conventions, in the shape of trait summaries (rate with CI)."""
    unscorable = (answers["aligned"].isna() | answers["coherent"].isna()).groupby(answers["model"]).sum()
    out: dict[str, dict[str, dict]] = {}
    for row in overall.itertuples():
        rate = None if math.isnan(row.em_rate) else float(row.em_rate)
        out.setdefault(row.model, {})[f"em_{row.convention}"] = {
            "kind": "rate", "rate": rate, "n": int(row.n_answers), "n_parseable": int(row.n_kept),
            "n_unparseable": int(unscorable.get(row.model, 0)),
            "ci_low": None if rate is None else float(row.ci_low), "ci_high": None if rate is None else float(row.ci_high)}
    return out


def read(path):
    return json.loads(Path(path).read_text())


with step_log(snakemake.log[0]):
    started = time.time()
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    ev, scale = p.eval, p.scale
    summaries = {label: read(path) for label, path in zip(p.students, inp.students)}
    teacher_summaries = {t: read(path) for t, path in zip(p.teachers, inp.teachers)}

    answers = report.load_answers(dict(zip(p.students, inp.answers)))
    overall = report.em_overall(answers, ev["bootstrap_samples"], p.seed, ev["min_coherent_answers"])
    report.write_table(overall, Path(out.em).with_suffix(""))
    for label, em in em_summaries(overall[overall["format"] == "plain"], answers).items():
        summaries[label].update(em)

    matrix = rts.trait_matrix(summaries, p.variants)
    report.write_table(matrix, Path(out.matrix).with_suffix(""))
    wide = rts.matrix_wide(matrix)
    report.write_table(wide, Path(out.wide).with_suffix(""))
    rts.write_latex(wide, out.latex)
    rts.plot_trait_matrix(matrix, out.matrix_png, f"Traits of the students by training variant ({scale})")

    pairs = rts.teacher_student_pairs(matrix, teacher_summaries)
    report.write_table(pairs, Path(out.pairs).with_suffix(""))
    rts.plot_teacher_vs_student(pairs, out.scatter, f"Teacher's trait vs its pure student's ({scale})")

    subsets = read(inp.subsets)
    sizes = pd.DataFrame([{"selector": name, "kind": s["kind"], "size": s["size"], "n_prompts": s["n_prompts"],
                           "n_unparseable": s["n_unparseable"]} for name, s in subsets.items()])
    report.write_table(sizes, Path(out.sizes).with_suffix(""))
    rts.plot_subset_sizes(sizes, out.sizes_png, f"Prompt subsets per selector ({scale})")

    write_json_atomic(out.provenance, run_info(
        {"eval": ev, "seed": p.seed, "scale": scale, "variants": p.variants},
        {**{f"traits_{label}": path for label, path in zip(p.students, inp.students)},
         **{f"traits_teacher_{t}": path for t, path in zip(p.teachers, inp.teachers)},
         **{f"answers_{label}": path for label, path in zip(p.students, inp.answers)},
         **{f"variant_{label}": path for label, path in zip(p.students, inp.variants)},
         "subsets": inp.subsets}, started,
        extra={"outputs": sorted(Path(x).name for x in out)}))
    print(wide.to_string(index=False))
