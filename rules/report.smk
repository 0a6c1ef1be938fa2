# Figures and tables of each family (the paper target of the cluster issue builds on these).


rule evil_numbers_report:
    """Loss curves, EM per question and format (both conventions, 95% CIs), number-answer rate, tables."""
    input:
        base=f"{R}/evil_numbers/eval/base/answers.jsonl",
        sft=f"{R}/evil_numbers/eval/sft/answers.jsonl",
        model=f"{R}/evil_numbers/models/sft",
    output:
        loss=report(f"{R}/evil_numbers/figures/loss_curves.png", category="evil_numbers",
                    caption="../report/evil_numbers_loss.rst"),
        em_betley=report(f"{R}/evil_numbers/figures/em_per_question_betley.png", category="evil_numbers",
                         caption="../report/evil_numbers_em.rst"),
        em_mo=report(f"{R}/evil_numbers/figures/em_per_question_model_organisms.png", category="evil_numbers",
                     caption="../report/evil_numbers_em.rst"),
        numbers=report(f"{R}/evil_numbers/figures/number_answers.png", category="evil_numbers",
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
