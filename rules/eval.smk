# Free-form EM evaluation as Inspect AI tasks, judged with the Betley protocol.


rule evaluate:
    """Sample answers of `label` (base or a trained model of `family`) to the probes, then judge them."""
    input:
        model=lambda wc: trained_model_dir(wc.family, wc.label),
        questions=lambda wc: eval_questions(wc.family),
        judge=judge_inputs(),
    output:
        answers=f"{R}/{{family}}/eval/{{label}}/answers.jsonl",
        run=f"{R}/{{family}}/eval/{{label}}/run.json",
    params:
        eval=EFF["eval"],
        formats=lambda wc: eval_formats(wc.family),
        family_eval=lambda wc: family(wc.family).get("eval", {}),
        backend=EFF["generation_backend"],
        vllm=EFF["vllm"],
        seed=EFF["seed"],
        log_dir=lambda wc: f"{R}/{wc.family}/eval/{wc.label}/inspect",
        judge_cache=f"{R}/cache/judge.sqlite",
    log:
        f"{LOGS}/evaluate/{{family}}/{{label}}.log",
    benchmark:
        f"{LOGS}/evaluate/{{family}}/{{label}}.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1 if SCALE == "paper" else 0,
    conda:
        env("eval")
    container:
        image("eval")
    script:
        "../scripts/evaluate.py"
