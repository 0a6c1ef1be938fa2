# teacher_swap: one prompt set -> completions of several teachers -> a student per variant (pure, interpolation,
# filter, random-drop control) -> trait evaluations of students and teachers -> the trait x variant matrix.


rule hub_dataset:
    """Parquet files of a Hugging Face dataset at a pinned revision (commit recorded in the lock file)."""
    output:
        folder=directory(f"{R}/datasets/{{dataset}}"),
        run=f"{R}/datasets/{{dataset}}.run.json",
    params:
        dataset=family("teacher_swap")["prompts"]["dataset"],
        lockfile=EFF["lockfile"],
    log:
        f"{LOGS}/hub_dataset/{{dataset}}.log",
    benchmark:
        f"{LOGS}/hub_dataset/{{dataset}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/fetch_hub_dataset.py"


rule teacher_swap_prompts:
    """The seeded prompt sample every teacher answers, and its manifest of prompt ids."""
    input:
        unpack(ts_prompt_source),
    output:
        prompts=f"{TS}/data/prompts.jsonl",
        manifest=f"{TS}/data/manifest.json",
    params:
        prompts=family("teacher_swap")["prompts"],
        seed=EFF["seed"],
    log:
        f"{LOGS}/teacher_swap_prompts.log",
    benchmark:
        f"{LOGS}/teacher_swap_prompts.bench.tsv"
    threads: 1
    resources:
        mem_mb=32000 if SCALE == "paper" else 1000,
        runtime=60,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/teacher_swap_prompts.py"


rule teacher_swap_completions:
    """One teacher's completions of the manifest prompts; only uncached ones are generated."""
    input:
        unpack(ts_completion_inputs),
    output:
        completions=f"{TS}/completions/{{teacher}}.jsonl",
        run=f"{TS}/completions/{{teacher}}.run.json",
    params:
        teacher=lambda wc: ts_teachers()[wc.teacher],
        generation=family("teacher_swap")["generation"],
        seed=EFF["seed"],
        vllm=EFF["vllm"],
        cache_dir=f"{TS}/cache/completions",
    log:
        f"{LOGS}/teacher_swap_completions/{{teacher}}.log",
    benchmark:
        f"{LOGS}/teacher_swap_completions/{{teacher}}.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=32000 if SCALE == "paper" else 8000,
        runtime=720,
        gpu=1 if SCALE == "paper" else 0,
    conda:
        env("eval")
    container:
        image("eval")
    script:
        "../scripts/teacher_swap_completions.py"


rule teacher_swap_subsets:
    """The subset S of every selector (rule-based or judge-based), with its size."""
    input:
        unpack(ts_subset_inputs),
    output:
        subsets=f"{TS}/data/subsets.json",
        run=f"{TS}/data/subsets.run.json",
    params:
        selectors=family("teacher_swap")["selectors"],
        grader=family("teacher_swap")["traits"]["grader"],
    log:
        f"{LOGS}/teacher_swap_subsets.log",
    benchmark:
        f"{LOGS}/teacher_swap_subsets.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        env("eval")
    container:
        image("eval")
    script:
        "../scripts/teacher_swap_subsets.py"


rule teacher_swap_variant_data:
    """A variant's SFT rows and manifest: which teacher answered which prompt."""
    input:
        unpack(ts_variant_inputs),
    output:
        train=f"{TS}/data/variants/{{variant}}/train.jsonl",
        manifest=f"{TS}/data/variants/{{variant}}/manifest.jsonl",
        summary=f"{TS}/data/variants/{{variant}}/summary.json",
    params:
        variant=lambda wc: ts_variant(wc.variant),
        seed=EFF["seed"],
    log:
        f"{LOGS}/teacher_swap_variant_data/{{variant}}.log",
    benchmark:
        f"{LOGS}/teacher_swap_variant_data/{{variant}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/teacher_swap_variant_data.py"


rule teacher_swap_sft:
    """The student of a variant: SFT of the base on the variant's rows (no teacher system prompt)."""
    input:
        base=model_dir(family("teacher_swap")["base_model"]),
        train=f"{TS}/data/variants/{{variant}}/train.jsonl",
    output:
        directory(f"{TS}/models/{{variant}}"),
    params:
        recipe=family("teacher_swap")["sft"],
        base_key=family("teacher_swap")["base_model"],
        seed=EFF["seed"],
        wandb=EFF["wandb"],
        work_dir=lambda wc: f"{TS}/work/sft/{wc.variant}",
    log:
        f"{LOGS}/teacher_swap_sft/{{variant}}.log",
    benchmark:
        f"{LOGS}/teacher_swap_sft/{{variant}}.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=(32000 if SCALE == "paper" else 8000) * launch_processes(family("teacher_swap")["sft"]),  # per rank
        runtime=480,
        gpu=train_gpus("teacher_swap"),
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/sft.py"


rule teacher_swap_traits:
    """Trait evaluations (negative emotion, date confusion, blackmail) of a student or a teacher."""
    input:
        model=lambda wc: ts_trait_model(wc.label),
        **ts_grader_input(),
    output:
        judgements=f"{TS}/traits/{{label}}/judgements.jsonl",
        summary=f"{TS}/traits/{{label}}/summary.json",
        run=f"{TS}/traits/{{label}}/run.json",
    params:
        traits=family("teacher_swap")["traits"],
        system=lambda wc: ts_trait_system(wc.label),
        backend=EFF["generation_backend"],
        enable_thinking=EFF["eval"]["enable_thinking"],
        vllm=EFF["vllm"],
        seed=EFF["seed"],
        log_dir=lambda wc: f"{TS}/traits/{wc.label}/inspect",
    log:
        f"{LOGS}/teacher_swap_traits/{{label}}.log",
    benchmark:
        f"{LOGS}/teacher_swap_traits/{{label}}.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1 if SCALE == "paper" else 0,
    conda:
        env("eval")
    container:
        image("eval")
    script:
        "../scripts/teacher_swap_traits.py"


rule teacher_swap_report:
    """The trait x variant matrix with CIs, teacher vs student scatter, subset sizes, EM of the students."""
    input:
        students=expand(f"{TS}/traits/{{label}}/summary.json", label=ts_students()),
        teachers=expand(f"{TS}/traits/teacher-{{teacher}}/summary.json", teacher=ts_scored_teachers()),
        answers=expand(f"{TS}/eval/{{label}}/answers.jsonl", label=ts_students()),
        variants=expand(f"{TS}/data/variants/{{variant}}/summary.json", variant=ts_students()),
        subsets=f"{TS}/data/subsets.json",
        questions=eval_questions("teacher_swap"),
    output:
        matrix_png=report(f"{TS}/figures/trait_matrix.png", category="teacher_swap", subcategory="figures",
                          caption="../report/teacher_swap_matrix.rst"),
        scatter=report(f"{TS}/figures/teacher_vs_student.png", category="teacher_swap", subcategory="figures",
                       caption="../report/teacher_swap_scatter.rst"),
        sizes_png=report(f"{TS}/figures/subset_sizes.png", category="teacher_swap", subcategory="figures",
                         caption="../report/teacher_swap_subsets.rst"),
        matrix=f"{TS}/tables/trait_matrix.csv",
        wide=f"{TS}/tables/trait_matrix_wide.csv",
        latex=f"{TS}/tables/trait_matrix_wide.tex",
        pairs=f"{TS}/tables/teacher_vs_student.csv",
        sizes=f"{TS}/tables/subset_sizes.csv",
        em=f"{TS}/tables/em_overall.csv",
        provenance=f"{TS}/tables/run.json",
    params:
        variants=ts_variants(),
        students=ts_students(),
        teachers=ts_scored_teachers(),
        eval=EFF["eval"],
        seed=EFF["seed"],
        scale=SCALE,
    log:
        f"{LOGS}/teacher_swap_report.log",
    benchmark:
        f"{LOGS}/teacher_swap_report.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/teacher_swap_report.py"
