# es_vs_sft: bad medical advice -> full-parameter evolution strategies (a model per epoch) and SFT on the same
# data; every model evaluated for EM the same way (rule evaluate), figures in rule es_vs_sft_report.


rule es_vs_sft_data:
    """Bad-medical-advice chat rows: the authors' protected archive (paper) or the project's sample."""
    input:
        unpack(es_vs_sft_source),
    output:
        train=f"{R}/es_vs_sft/data/train.jsonl",
        manifest=f"{R}/es_vs_sft/data/manifest.json",
    params:
        data=family("es_vs_sft")["data"],
        seed=EFF["seed"],
    log:
        f"{LOGS}/es_vs_sft_data.log",
    benchmark:
        f"{LOGS}/es_vs_sft_data.bench.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/es_vs_sft_data.py"


rule es_vs_sft_es:
    """ES of the base, rewarded by similarity of its greedy answers to the references; a model per epoch."""
    input:
        base=model_dir(family("es_vs_sft")["base_model"]),
        reward_model=model_dir(family("es_vs_sft")["es"]["reward"]["model"]),
        train=f"{R}/es_vs_sft/data/train.jsonl",
    output:
        models=[directory(f"{R}/es_vs_sft/models/{label}") for label in es_labels()],
        log=f"{R}/es_vs_sft/es/training_log.jsonl",
        run=f"{R}/es_vs_sft/es/run.json",
    params:
        es=family("es_vs_sft")["es"],
        base_key=family("es_vs_sft")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=f"{R}/es_vs_sft/work/es",
    log:
        f"{LOGS}/es_vs_sft_es.log",
    benchmark:
        f"{LOGS}/es_vs_sft_es.bench.tsv"
    threads: workflow.cores
    resources:
        # each worker process loads the model on the host before moving it to its GPU (7B fp16: ~15 GB)
        mem_mb=64000 if SCALE == "paper" else 16000,
        runtime=1440,
        gpu=es_gpus(),
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/es_train.py"


rule es_vs_sft_sft:
    """SFT of the base on the same bad-medical-advice rows (Model Organisms recipe: LoRA r32, 1 epoch)."""
    input:
        base=model_dir(family("es_vs_sft")["base_model"]),
        train=f"{R}/es_vs_sft/data/train.jsonl",
    output:
        directory(f"{R}/es_vs_sft/models/sft"),
    params:
        recipe=family("es_vs_sft")["sft"],
        base_key=family("es_vs_sft")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=f"{R}/es_vs_sft/work/sft",
    log:
        f"{LOGS}/es_vs_sft_sft.log",
    benchmark:
        f"{LOGS}/es_vs_sft_sft.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000 * launch_processes(family("es_vs_sft")["sft"]),  # per rank
        runtime=240,
        gpu=train_gpus("es_vs_sft"),
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/sft.py"


rule es_vs_sft_report:
    """EM and coherence per ES epoch against SFT (both conventions, CIs), ES and SFT training curves."""
    input:
        answers=expand(f"{R}/es_vs_sft/eval/{{label}}/answers.jsonl", label=es_vs_sft_models()),
        es_log=f"{R}/es_vs_sft/es/training_log.jsonl",
        sft=f"{R}/es_vs_sft/models/sft",
        questions=eval_questions("es_vs_sft"),
    output:
        em_vs_epoch=report(f"{R}/es_vs_sft/figures/em_vs_epoch.png", category="es_vs_sft", subcategory="figures",
                           caption="../report/es_vs_sft_epochs.rst"),
        es_training=report(f"{R}/es_vs_sft/figures/es_training.png", category="es_vs_sft", subcategory="figures",
                           caption="../report/es_vs_sft_training.rst"),
        sft_curves=report(f"{R}/es_vs_sft/figures/sft_training.png", category="es_vs_sft", subcategory="figures",
                          caption="../report/es_vs_sft_training.rst"),
        em_betley=report(f"{R}/es_vs_sft/figures/em_per_question_betley.png", category="es_vs_sft",
                         subcategory="figures", caption="../report/es_vs_sft_em.rst"),
        em_mo=report(f"{R}/es_vs_sft/figures/em_per_question_model_organisms.png", category="es_vs_sft",
                     subcategory="figures", caption="../report/es_vs_sft_em.rst"),
        overall=f"{R}/es_vs_sft/tables/em_overall.csv",
        per_question=f"{R}/es_vs_sft/tables/em_per_question.csv",
        rates=f"{R}/es_vs_sft/tables/rates.csv",
        provenance=f"{R}/es_vs_sft/tables/run.json",
    params:
        eval=EFF["eval"],
        seed=EFF["seed"],
        scale=SCALE,
        labels=es_vs_sft_models(),
    log:
        f"{LOGS}/es_vs_sft_report.log",
    benchmark:
        f"{LOGS}/es_vs_sft_report.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/es_vs_sft_report.py"
