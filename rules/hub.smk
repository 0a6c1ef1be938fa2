# Model cards (always written) and upload to the Hugging Face hub (only with hub.push and HF_TOKEN).


rule model_card:
    """The folder that would be pushed for a trained model: weights, run.json, README.md card."""
    input:
        unpack(card_extra_inputs),
        model=lambda wc: trained_model_dir(wc.family, wc.label),
        evals=lambda wc: [f"{R}/{wc.family}/eval/{wc.label}/answers.jsonl"],
        questions=lambda wc: eval_questions(wc.family),
    output:
        directory(f"{R}/{{family}}/hub/{{label}}"),
    params:
        eval=EFF["eval"],
        seed=EFF["seed"],
        namespace=EFF["hub"]["namespace"],
        scale=SCALE,
        base_spec=lambda wc: EFF["models"][family(wc.family)["base_model"]],
    log:
        f"{LOGS}/model_card/{{family}}/{{label}}.log",
    benchmark:
        f"{LOGS}/model_card/{{family}}/{{label}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/model_card.py"


rule hub_push:
    """Push a card folder (hub.push: true and HF_TOKEN set); unchanged content makes no new commit."""
    input:
        f"{R}/{{family}}/hub/{{label}}",
    output:
        f"{R}/{{family}}/hub/{{label}}.pushed.json",
    params:
        namespace=EFF["hub"]["namespace"],
        private=EFF["hub"]["private"],
        scale=SCALE,
    log:
        f"{LOGS}/hub_push/{{family}}/{{label}}.log",
    benchmark:
        f"{LOGS}/hub_push/{{family}}/{{label}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/hub_push.py"
