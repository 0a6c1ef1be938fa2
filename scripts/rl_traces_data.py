"""Snakemake step: ItAll144 GRPO decision prompts, verl parquet files and the evaluation combinations."""
import json

from emrepro import games
from emrepro.data import write_jsonl
from emrepro.grpo import write_verl_parquet
from emrepro.provenance import write_json_atomic
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    cfg, seed, out = snakemake.params.games, snakemake.params.seed, snakemake.output
    train_combos, eval_combos = games.split_combinations(seed, cfg["holdout_fraction"])
    held_out = sorted({g for g, _ in eval_combos} - {g for g, _ in train_combos})
    common = dict(n_rounds=cfg["rounds"], with_opp_desc=cfg["opponent_description"], labels=tuple(cfg["labels"]),
                  system=cfg.get("system"), malformed_reward=cfg["malformed_reward"])
    prompts = games.decision_rows(train_combos, n_rows=cfg["train_prompts"], seed=seed, **common)
    # verl needs a validation file; the step sets test_freq=-1, so it is only read, never scored
    val = games.decision_rows(eval_combos, n_rows=min(64, cfg["train_prompts"]), seed=seed + 1, **common)
    write_jsonl(out.prompts, prompts)
    write_verl_parquet(prompts, out.verl_train, "train")
    write_verl_parquet(val, out.verl_val, "val")
    eval_combos = games.eval_combinations(seed, cfg["holdout_fraction"], cfg["eval_games"])
    write_json_atomic(out.eval_combos, {"seed": seed, "held_out_games": held_out,
                                        "combinations": [list(c) for c in eval_combos]})
    print(f"{len(prompts)} GRPO prompts from {len(train_combos)} train combinations "
          f"({len(held_out)} games held out); {len(eval_combos)} evaluation combinations")
    print(json.dumps(prompts[0]["prompt"], indent=1)[:3000])
