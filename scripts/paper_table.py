"""Snakemake step: one report table of a family under paper/tables/<family>/ as CSV, Markdown and LaTeX."""
from emrepro.paper import table_formats
from emrepro.runtime import step_log

with step_log(snakemake.log[0]):
    out = snakemake.output
    table_formats(snakemake.input.csv, out.csv, out.md, out.tex)
    print(f"{snakemake.input.csv} -> {out.csv}, {out.md}, {out.tex}")
