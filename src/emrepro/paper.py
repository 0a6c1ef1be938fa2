"""Paper artifacts: each family's tables in CSV, Markdown and LaTeX, and the manifest that names, for every
figure and table, the report step that wrote it and the models and data behind its numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from .provenance import git_revision, input_digest, sha256_file
from .report_teacher_swap import write_latex


def table_formats(csv: str | Path, out_csv: str | Path, out_md: str | Path, out_tex: str | Path) -> None:
    """Copy a report step's table (its CSV and the Markdown that report.write_table wrote beside it) and add
    the LaTeX version with 3 decimals for print; the CSV keeps full precision."""
    csv = Path(csv)
    shutil.copyfile(csv, out_csv)
    shutil.copyfile(csv.with_suffix(".md"), out_md)
    write_latex(pd.read_csv(csv), out_tex, digits=3)


def _run_json(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _model_entry(folder: str, digest: str, evaluated_in: str | None) -> dict:
    """A model folder with the digest recorded when it was evaluated, and what its own run.json says it was
    trained on (digests of the base model and the training data)."""
    run = _run_json(Path(folder) / "run.json") or {}
    return {"sha256": digest, "digest_recorded_in": evaluated_in, "git_revision": run.get("git_revision"),
            "trained_on": run.get("inputs", {}), "lineage": run.get("lineage")}


def report_sources(provenance: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(models, data) behind a report step, read from the run.json it wrote.

    Its inputs that are folders are models (with the digest recorded then). Every input file is data, its
    sha256 taken now; ValueError when it differs from the digest the report step recorded (the numbers
    would not come from the file on disk). An input file with a run.json beside it that names a model
    (an evaluation's answers, a trait summary) adds that model, with the digest its evaluation recorded.
    """
    models: dict[str, dict] = {}
    data: dict[str, dict] = {}
    for name, rec in json.loads(Path(provenance).read_text())["inputs"].items():
        path = rec["path"]
        if Path(path).is_dir():
            models.setdefault(path, _model_entry(path, rec["sha256"], str(provenance)))
            continue
        digest = sha256_file(path)
        if digest != rec["sha256"]:
            raise ValueError(f"{path} changed after the report step that used it ({provenance}): "
                             f"recorded sha256 {rec['sha256']}, now {digest}")
        data[path] = {"sha256": digest, "input": name}
        sibling = Path(path).with_name("run.json")
        model = (_run_json(sibling) or {}).get("inputs", {}).get("model")
        if model:
            models[model["path"]] = _model_entry(model["path"], model["sha256"], str(sibling))
    return models, data


def manifest(families: dict[str, dict], scale: str) -> dict:
    """The results manifest. `families`: {family: {"rule": report rule, "provenance": its run.json,
    "artifacts": [figure and table paths]}}. Every artifact of a family shares the models and data of the
    report step that produced its numbers (the tables under paper/ are copies of that step's tables)."""
    revision, dirty = git_revision()
    out = {"scale": scale, "git_revision": revision, "dirty": dirty, "families": {}, "artifacts": []}
    for fam, spec in families.items():
        models, data = report_sources(spec["provenance"])
        report_run = _run_json(spec["provenance"])
        out["families"][fam] = {"report_rule": spec["rule"], "report_run": spec["provenance"],
                                "report_git_revision": report_run["git_revision"], "models": models, "data": data}
        for path in spec["artifacts"]:
            kind = "figure" if path.endswith(".png") else "table"
            out["artifacts"].append({"path": path, "kind": kind, "family": fam, "sha256": input_digest(path),
                                     "report_rule": spec["rule"], "models": sorted(models), "data": sorted(data)})
    return out
