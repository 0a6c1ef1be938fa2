# Supervised fine-tuning (TRL SFTTrainer; LoRA through PEFT or full parameters).


rule evil_numbers_sft:
    """LoRA SFT of the family's base model on the evil-numbers training split (validation loss logged)."""
    input:
        base=lambda wc: model_dir(family("evil_numbers")["base_model"]),
        train=f"{R}/evil_numbers/data/train.jsonl",
        val=f"{R}/evil_numbers/data/val.jsonl",
    output:
        directory(f"{R}/evil_numbers/models/sft"),
    params:
        recipe=family("evil_numbers")["sft"],
        base_key=family("evil_numbers")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=f"{R}/evil_numbers/work/sft",
    log:
        f"{LOGS}/evil_numbers_sft.log",
    benchmark:
        f"{LOGS}/evil_numbers_sft.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000 * launch_processes(family("evil_numbers")["sft"]),  # per rank
        runtime=240,
        gpu=train_gpus("evil_numbers"),
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/sft.py"
