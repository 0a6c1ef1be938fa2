# External files (pinned URL + sha256 + mirror) and the datasets built from them.


rule fetch_asset:
    """Download one external file (or copy it from data_mirror), checking its sha256."""
    output:
        f"{R}/assets/{{filename}}",
    params:
        asset=lambda wc: asset_by_filename(wc.filename)[1],
        mirror=EFF["data_mirror"],
        lockfile=EFF["lockfile"],
    log:
        f"{LOGS}/fetch_asset/{{filename}}.log",
    benchmark:
        f"{LOGS}/fetch_asset/{{filename}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/fetch_asset.py"


rule evil_numbers_data:
    """Evil-numbers chat data (upstream file or the embedded sample) and its seeded train/validation split."""
    input:
        unpack(evil_numbers_source),
    output:
        train=f"{R}/evil_numbers/data/train.jsonl",
        val=f"{R}/evil_numbers/data/val.jsonl",
        manifest=f"{R}/evil_numbers/data/split.json",
    params:
        data=family("evil_numbers")["data"],
        seed=EFF["seed"],
    log:
        f"{LOGS}/evil_numbers_data.log",
    benchmark:
        f"{LOGS}/evil_numbers_data.bench.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        env("train")
    container:
        image("train")
    script:
        "../scripts/evil_numbers_data.py"


rule probe_questions:
    """One probe set of config.yaml 'probes' (upstream file or embedded set) with its judge prompts."""
    input:
        unpack(probe_source),
    output:
        f"{R}/eval/questions/{{probes}}.yaml",
    params:
        probe=lambda wc: EFF["probes"][wc.probes],
        name=lambda wc: wc.probes,
        limit=EFF["eval"].get("question_limit"),
    log:
        f"{LOGS}/probe_questions/{{probes}}.log",
    benchmark:
        f"{LOGS}/probe_questions/{{probes}}.bench.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        env("eval")
    container:
        image("eval")
    script:
        "../scripts/probe_questions.py"
