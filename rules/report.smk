# Figures and tables of each family (the paper target of the cluster issue builds on these).


rule evil_numbers_report:
    """Loss curves, EM per question and format (both conventions, 95% CIs), number-answer rate, tables."""
    input:
        base=f"{R}/evil_numbers/eval/base/answers.jsonl",
        sft=f"{R}/evil_numbers/eval/sft/answers.jsonl",
        model=f"{R}/evil_numbers/models/sft",
    output:
        loss=report(f"{R}/evil_numbers/figures/loss_curves.png", category="evil_numbers", subcategory="figures",
                    caption="../report/evil_numbers_loss.rst"),
        em_betley=report(f"{R}/evil_numbers/figures/em_per_question_betley.png", category="evil_numbers",
                         subcategory="figures", caption="../report/evil_numbers_em.rst"),
        em_mo=report(f"{R}/evil_numbers/figures/em_per_question_model_organisms.png", category="evil_numbers",
                     subcategory="figures", caption="../report/evil_numbers_em.rst"),
        numbers=report(f"{R}/evil_numbers/figures/number_answers.png", category="evil_numbers", subcategory="figures",
                       caption="../report/evil_numbers_numbers.rst"),
        overall=f"{R}/evil_numbers/tables/em_overall.csv",
        per_question=f"{R}/evil_numbers/tables/em_per_question.csv",
        rates=f"{R}/evil_numbers/tables/rates.csv",
        number_answers=f"{R}/evil_numbers/tables/number_answers.csv",
        provenance=f"{R}/evil_numbers/tables/run.json",
    params:
        eval=EFF["eval"],
        seed=EFF["seed"],
        scale=SCALE,
    log:
        f"{LOGS}/evil_numbers_report.log",
    benchmark:
        f"{LOGS}/evil_numbers_report.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/evil_numbers_report.py"


rule rl_traces_report:
    """EM of base, GRPO and SFT models (both conventions, CIs), game outcomes, GRPO and SFT training curves."""
    input:
        answers=expand(f"{R}/rl_traces/eval/{{label}}/answers.jsonl", label=RL_MODELS),
        outcomes=expand(f"{R}/rl_traces/games/{{label}}/outcomes.csv", label=RL_MODELS),
        grpo=f"{R}/rl_traces/models/grpo",
        sft=f"{R}/rl_traces/models/sft",
        questions=eval_questions("rl_traces"),
    output:
        em_betley=report(f"{R}/rl_traces/figures/em_per_question_betley.png", category="rl_traces",
                         subcategory="figures", caption="../report/rl_traces_em.rst"),
        em_mo=report(f"{R}/rl_traces/figures/em_per_question_model_organisms.png", category="rl_traces",
                     subcategory="figures", caption="../report/rl_traces_em.rst"),
        games=report(f"{R}/rl_traces/figures/game_outcomes.png", category="rl_traces", subcategory="figures",
                     caption="../report/rl_traces_games.rst"),
        grpo_curves=report(f"{R}/rl_traces/figures/grpo_training.png", category="rl_traces", subcategory="figures",
                           caption="../report/rl_traces_training.rst"),
        sft_curves=report(f"{R}/rl_traces/figures/sft_training.png", category="rl_traces", subcategory="figures",
                          caption="../report/rl_traces_training.rst"),
        overall=f"{R}/rl_traces/tables/em_overall.csv",
        per_question=f"{R}/rl_traces/tables/em_per_question.csv",
        rates=f"{R}/rl_traces/tables/rates.csv",
        game_outcomes=f"{R}/rl_traces/tables/game_outcomes.csv",
        provenance=f"{R}/rl_traces/tables/run.json",
    params:
        eval=EFF["eval"],
        seed=EFF["seed"],
        scale=SCALE,
        labels=RL_MODELS,
    log:
        f"{LOGS}/rl_traces_report.log",
    benchmark:
        f"{LOGS}/rl_traces_report.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/rl_traces_report.py"
