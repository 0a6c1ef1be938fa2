# rl_traces: ItAll144 games -> GRPO of the base -> chain-of-thought rollouts -> full SFT of the base on them.


rule rl_traces_data:
    """GRPO decision prompts (train games), verl parquet files, and the evaluation combinations."""
    output:
        prompts=f"{R}/rl_traces/data/grpo_prompts.jsonl",
        verl_train=f"{R}/rl_traces/data/verl/train.parquet",
        verl_val=f"{R}/rl_traces/data/verl/val.parquet",
        eval_combos=f"{R}/rl_traces/data/eval_combinations.json",
    params:
        games=family("rl_traces")["games"],
        seed=EFF["seed"],
    log:
        f"{LOGS}/rl_traces_data.log",
    benchmark:
        f"{LOGS}/rl_traces_data.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/rl_traces_data.py"


rule rl_traces_grpo:
    """GRPO of the base on the game decisions (TRL here, verl on a cluster); the teacher step's model."""
    input:
        base=lambda wc: model_dir(family("rl_traces")["base_model"]),
        prompts=f"{R}/rl_traces/data/grpo_prompts.jsonl",
        verl_train=f"{R}/rl_traces/data/verl/train.parquet",
        verl_val=f"{R}/rl_traces/data/verl/val.parquet",
    output:
        directory(f"{R}/rl_traces/models/grpo"),
    params:
        recipe=family("rl_traces")["grpo"],
        base_key=family("rl_traces")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=f"{R}/rl_traces/work/grpo",
    log:
        f"{LOGS}/rl_traces_grpo.log",
    benchmark:
        f"{LOGS}/rl_traces_grpo.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000 * launch_processes(family("rl_traces")["grpo"]),  # per rank (TRL launch)
        runtime=720,
        gpu=grpo_gpus(),
    conda:
        env(grpo_env())
    container:
        image(grpo_env())
    script:
        "../scripts/grpo.py"


rule rl_traces_rollouts:
    """One chain-of-thought game per evaluation combination for `label` (base, grpo = teacher, sft)."""
    input:
        model=lambda wc: trained_model_dir("rl_traces", wc.label),
        combos=f"{R}/rl_traces/data/eval_combinations.json",
    output:
        rollouts=f"{R}/rl_traces/games/{{label}}/rollouts.jsonl",
        outcomes=f"{R}/rl_traces/games/{{label}}/outcomes.csv",
        run=f"{R}/rl_traces/games/{{label}}/run.json",
    params:
        rollouts=family("rl_traces")["rollouts"],
        games=family("rl_traces")["games"],
        seed=EFF["seed"],
        vllm=EFF["vllm"],
    log:
        f"{LOGS}/rl_traces_rollouts/{{label}}.log",
    benchmark:
        f"{LOGS}/rl_traces_rollouts/{{label}}.bench.tsv"
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
        "../scripts/rl_traces_rollouts.py"


rule rl_traces_sft_data:
    """The teacher's traces as an SFT dataset: one full multi-round conversation per combination."""
    input:
        f"{R}/rl_traces/games/grpo/rollouts.jsonl",
    output:
        f"{R}/rl_traces/data/traces.jsonl",
    log:
        f"{LOGS}/rl_traces_sft_data.log",
    benchmark:
        f"{LOGS}/rl_traces_sft_data.bench.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/rl_traces_sft_data.py"


rule rl_traces_sft:
    """Full-parameter SFT of the original base on the teacher's traces (loss on every assistant turn)."""
    input:
        base=lambda wc: model_dir(family("rl_traces")["base_model"]),
        train=f"{R}/rl_traces/data/traces.jsonl",
    output:
        directory(f"{R}/rl_traces/models/sft"),
    params:
        recipe=family("rl_traces")["sft"],
        base_key=family("rl_traces")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=f"{R}/rl_traces/work/sft",
    log:
        f"{LOGS}/rl_traces_sft.log",
    benchmark:
        f"{LOGS}/rl_traces_sft.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000 * launch_processes(family("rl_traces")["sft"]),  # per rank
        runtime=240,
        gpu=train_gpus("rl_traces"),
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/sft.py"
