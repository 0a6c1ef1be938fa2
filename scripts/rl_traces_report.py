"""Snakemake step: rl_traces figures and tables (EM of base / GRPO / SFT, game outcomes, training curves)."""
import time
from pathlib import Path

import pandas as pd

from emrepro import report
from emrepro.probes import probe_sets
from emrepro.provenance import run_info, write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    started = time.time()
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    ev, scale = p.eval, p.scale
    answers = report.load_answers(dict(zip(p.labels, inp.answers)))
    # which probe set each question comes from (EM probes vs game-theory probes)
    probe_set = probe_sets(inp.questions)
    answers["probe_set"] = answers["question_id"].map(probe_set)
    tables = report.em_tables(answers, ev["bootstrap_samples"], p.seed, ev["min_coherent_answers"])
    tables.pop("number_answers")
    for name, table in tables.items():
        if "question_id" in table:
            table.insert(table.columns.get_loc("question_id") + 1, "probe_set", table["question_id"].map(probe_set))
        report.write_table(table, Path(out.overall).parent / name)
    outcomes = pd.concat([pd.read_csv(path).assign(model=label) for label, path in zip(p.labels, inp.outcomes)],
                         ignore_index=True)
    outcomes = outcomes[["model"] + [c for c in outcomes.columns if c != "model"]]
    report.write_table(outcomes, Path(out.game_outcomes).with_suffix(""))
    for convention, path in (("betley", out.em_betley), ("model_organisms", out.em_mo)):
        report.plot_em(tables["em_per_question"], path, convention,
                       f"EM per question: base, GRPO teacher, SFT on its traces ({convention}, {scale})")
    report.plot_game_outcomes(outcomes[outcomes["opponent"] != "all"], out.games,
                              f"ItAll144 game outcomes per opponent ({scale})")
    report.plot_training_curves(Path(inp.grpo) / "training_log.jsonl", out.grpo_curves,
                                {"reward": "mean reward", "reward_std": "reward std", "kl": "KL to base"},
                                f"GRPO on ItAll144 ({scale})")
    report.plot_training_curves(Path(inp.sft) / "training_log.jsonl", out.sft_curves,
                                {"loss": "loss", "mean_token_accuracy": "mean token accuracy",
                                 "grad_norm": "grad norm"}, f"SFT on the teacher's traces ({scale})")
    write_json_atomic(out.provenance, run_info(
        {"eval": ev, "seed": p.seed, "scale": scale},
        {**{f"answers_{label}": path for label, path in zip(p.labels, inp.answers)},
         **{f"outcomes_{label}": path for label, path in zip(p.labels, inp.outcomes)},
         "grpo_model": inp.grpo, "sft_model": inp.sft}, started,
        extra={"outputs": sorted(Path(x).name for x in out)}))
    print(tables["em_overall"].to_string())
    print(outcomes.to_string(index=False))
