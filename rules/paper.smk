# The paper release: every figure and table of the four families, rebuilt from results on disk. It depends
# on the report rules' figures and tables only (never on model cards or uploads), so with the models and
# evaluations present it runs report, table and manifest jobs and nothing else.
#   results/<scale>/paper/tables/<family>/<table>.{csv,md,tex}   copies of the report tables, plus LaTeX
#   results/<scale>/paper/manifest.json                         report rule, models and data of each artifact
# The figures stay where the report rules write them (results/<scale>/<family>/figures/).

# Helpers (paper_outputs, paper_families, ...) are in rules/common.smk.


rule paper_table:
    """One report table as CSV and Markdown (the report step's own) and LaTeX (booktabs), in the report."""
    input:
        csv=f"{R}/{{family}}/tables/{{table}}.csv",
    output:
        csv=report(f"{PAPER}/tables/{{family}}/{{table}}.csv", category="{family}", subcategory="tables",
                   caption="../report/paper_table.rst"),
        md=f"{PAPER}/tables/{{family}}/{{table}}.md",
        tex=f"{PAPER}/tables/{{family}}/{{table}}.tex",
    wildcard_constraints:
        table=r"[A-Za-z0-9_]+",
    log:
        f"{LOGS}/paper_table/{{family}}/{{table}}.log",
    benchmark:
        f"{LOGS}/paper_table/{{family}}/{{table}}.bench.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/paper_table.py"


rule paper_manifest:
    """Git revision, scale and, for every figure and table: its report rule, models (folder + digest), data."""
    input:
        artifacts=[a for spec in paper_families().values() for a in spec["artifacts"]],
        provenance=[spec["provenance"] for spec in paper_families().values()],
    output:
        manifest=report(f"{PAPER}/manifest.json", category="provenance",
                        caption="../report/paper_manifest.rst"),
    params:
        families=paper_families(),
        scale=SCALE,
    log:
        f"{LOGS}/paper_manifest.log",
    benchmark:
        f"{LOGS}/paper_manifest.bench.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        env("hub")
    container:
        image("hub")
    script:
        "../scripts/paper_manifest.py"
