"""Figures and tables of the `teacher_swap` family: traits of students trained on swapped teacher rollouts.

Tables

* `trait_matrix`: the long table, one row per (variant, trait) with the value (a rate or a mean), its 95%
  CI and the counts of judged, parseable and unparseable replies, next to the variant's kind, teachers and
  selector.
* `matrix_wide`: one row per variant, one column per trait, cells "value [ci_low, ci_high]" (the table to
  paste into a paper; `write_latex` writes it as a booktabs LaTeX tabular).
* `teacher_student_pairs`: each teacher T next to its pure student `pure_T`, trait by trait.

Figures

* `plot_trait_matrix` (the main figure): a heat map, one row per trait, one column per student variant,
  the columns grouped by variant kind (pure, interpolate, filter, control; labelled above, separated by
  white lines). Traits have different scales (rates 0..1, scores 0..10), so the colour is the value
  scaled WITHIN its row (row minimum to row maximum); the numbers printed in each cell (value, and the 95%
  CI on a second line) are the raw values. Grey cells are "n/a": no parseable judgement. A "*" after a
  value marks a cell where some judge replies were unparseable (counted in the tables, not in the value).
* `plot_teacher_vs_student`: one panel per trait, each teacher's own score (x) against the score of the
  student trained purely on that teacher's completions (y), both with 95% CI bars, and the y = x diagonal:
  points on the diagonal mean the student inherited the trait at the teacher's level. Teachers that have
  no score of their own (e.g. a dataset column rather than a model) are listed under the panel. The panel
  title gives Pearson's r when at least three teachers have both scores.
* `plot_subset_sizes`: for each selector, how many prompts of the manifest it selected (the subset S that
  interpolate / filter / control variants swap or drop), as horizontal bars over a faint bar of the
  whole manifest, annotated "size / n_prompts (pct%)" and, for judge selectors, the count of unparseable
  judge replies.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .provenance import atomic_output
from .report import _save

MATRIX_COLUMNS = ["variant", "kind", "teacher_a", "teacher_b", "selector", "trait", "stat", "value", "ci_low",
                  "ci_high", "n", "n_parseable", "n_unparseable"]
PAIR_COLUMNS = ["teacher", "student", "trait", "stat", "teacher_value", "teacher_ci_low", "teacher_ci_high",
                "student_value", "student_ci_low", "student_ci_high"]
_COUNTS = ["n", "n_parseable", "n_unparseable"]


def _num(value) -> float:
    """A float, NaN for None / NaN / missing."""
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _summary_value(summary: dict, where: str) -> tuple[str, float, float, float]:
    """(stat, value, ci_low, ci_high) of a trait_summary dict."""
    stat = summary.get("kind")
    if stat not in ("rate", "mean"):
        raise ValueError(f"{where}: summary kind {stat!r} is neither 'rate' nor 'mean'")
    return stat, _num(summary.get(stat)), _num(summary.get("ci_low")), _num(summary.get("ci_high"))


# --------------------------------------------------------------------------- tables

def trait_matrix(summaries: dict[str, dict[str, dict]], variants: list[dict]) -> pd.DataFrame:
    """The long table of student traits: one row per (variant, trait), columns MATRIX_COLUMNS.

    `summaries` is {variant name: {trait: trait_summary dict}}; `variants` the variant dicts (name, kind,
    teacher_a, teacher_b, selector) in display order. Rows follow the variant order, then the order in
    which traits first appear (over the variants in that order). A trait that one variant lacks gets a row
    with NaN value and counts. Labels of `summaries` that are not variants are ignored. ValueError when
    a variant has no summaries (naming every such variant), or a trait is a rate for one variant and a
    mean for another.
    """
    names = [v["name"] for v in variants]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"trait_matrix: variants {dups} are listed twice")
    missing = [n for n in names if n not in summaries]
    if missing:
        raise ValueError(f"trait_matrix: no trait summaries for variant(s) {missing} "
                         f"(summaries are given for {sorted(summaries)})")
    traits: dict[str, str] = {}  # trait -> stat, in order of first appearance
    for name in names:
        for trait, summary in summaries[name].items():
            stat = _summary_value(summary, f"variant {name!r} trait {trait!r}")[0]
            if traits.setdefault(trait, stat) != stat:
                raise ValueError(f"trait_matrix: trait {trait!r} is a {traits[trait]} for one variant and a "
                                 f"{stat} for variant {name!r}")
    rows = []
    for variant in variants:
        name = variant["name"]
        for trait, stat in traits.items():
            summary = summaries[name].get(trait)
            row = {"variant": name, "kind": variant.get("kind"), "teacher_a": variant.get("teacher_a"),
                   "teacher_b": variant.get("teacher_b"), "selector": variant.get("selector"), "trait": trait,
                   "stat": stat}
            if summary is None:
                row.update(value=math.nan, ci_low=math.nan, ci_high=math.nan, **{c: None for c in _COUNTS})
            else:
                _, value, low, high = _summary_value(summary, f"variant {name!r} trait {trait!r}")
                row.update(value=value, ci_low=low, ci_high=high, **{c: summary.get(c) for c in _COUNTS})
            rows.append(row)
    df = pd.DataFrame(rows, columns=MATRIX_COLUMNS)
    for col in ("value", "ci_low", "ci_high"):
        df[col] = df[col].astype(float)
    for col in _COUNTS:
        df[col] = pd.array(df[col].tolist(), dtype="Int64") if len(df) else pd.array([], dtype="Int64")
    return df


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_cell(value, ci_low, ci_high, n_unparseable=None, digits: int = 3) -> str:
    """"0.420 [0.310, 0.550]"; "n/a" without a value; "(no CI)" without an interval; the count of
    unparseable replies appended as " (k unparseable)" when there are any."""
    if _is_missing(value):
        text = "n/a"
    elif _is_missing(ci_low) or _is_missing(ci_high):
        text = f"{value:.{digits}f} (no CI)"
    else:
        text = f"{value:.{digits}f} [{ci_low:.{digits}f}, {ci_high:.{digits}f}]"
    if not _is_missing(n_unparseable) and int(n_unparseable) > 0:
        text += f" ({int(n_unparseable)} unparseable)"
    return text


def matrix_wide(matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (matrix order), a `variant` column and one column per trait (matrix order) holding
    "value [ci_low, ci_high]" with 3 decimals, "n/a" without a value, " (k unparseable)" appended when
    some judge replies were unparseable."""
    variants = list(dict.fromkeys(matrix["variant"]))
    traits = list(dict.fromkeys(matrix["trait"]))
    cells = {(r.variant, r.trait): format_cell(r.value, r.ci_low, r.ci_high, r.n_unparseable)
             for r in matrix.itertuples(index=False)}
    rows = [{"variant": v, **{t: cells.get((v, t), "n/a") for t in traits}} for v in variants]
    return pd.DataFrame(rows, columns=["variant", *traits])


def write_latex(df: pd.DataFrame, path: str | Path, digits: int | None = None) -> None:
    """The table as a LaTeX tabular (booktabs rules: needs \\usepackage{booktabs}), special characters of
    headers and cells escaped (pure_plain -> pure\\_plain), floats with `digits` decimals when given,
    written atomically."""
    float_format = None if digits is None else f"{{:.{digits}f}}".format
    text = df.to_latex(index=False, escape=True, na_rep="n/a", float_format=float_format)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def teacher_student_pairs(matrix: pd.DataFrame, teacher_summaries: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """Each teacher T that has a pure student (kind "pure", teacher_a T) next to it, trait by trait.

    Columns PAIR_COLUMNS; `student` is the pure variant's name. Rows follow the order of the pure variants
    in the matrix, then the matrix's trait order. A teacher missing from `teacher_summaries` (e.g. a
    dataset column, not a model), or without a summary of a trait, keeps its rows with NaN teacher_*.
    ValueError when a teacher has two pure students, or a teacher's summary is a rate where the
    student's is a mean (or the reverse).
    """
    pure = matrix[matrix["kind"] == "pure"]
    students: dict[str, str] = {}
    for variant, teacher in dict.fromkeys(zip(pure["variant"], pure["teacher_a"])):
        if teacher in students and students[teacher] != variant:
            raise ValueError(f"teacher {teacher!r} has two pure students: {students[teacher]!r} and {variant!r}")
        students[teacher] = variant
    rows = []
    for teacher, student in students.items():
        for r in pure[pure["variant"] == student].itertuples(index=False):
            summary = teacher_summaries.get(teacher, {}).get(r.trait)
            t_value = t_low = t_high = math.nan
            if summary is not None:
                stat, t_value, t_low, t_high = _summary_value(summary, f"teacher {teacher!r} trait {r.trait!r}")
                if stat != r.stat:
                    raise ValueError(f"trait {r.trait!r}: teacher {teacher!r} has a {stat}, its student "
                                     f"{student!r} a {r.stat}")
            rows.append({"teacher": teacher, "student": student, "trait": r.trait, "stat": r.stat,
                         "teacher_value": t_value, "teacher_ci_low": t_low, "teacher_ci_high": t_high,
                         "student_value": r.value, "student_ci_low": r.ci_low, "student_ci_high": r.ci_high})
    df = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    for col in PAIR_COLUMNS[4:]:
        df[col] = df[col].astype(float)
    return df


# --------------------------------------------------------------------------- figures

def _kind_groups(matrix: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """[(kind, [variants])]: kinds in order of first appearance, variants in matrix order within a kind."""
    groups: dict[str, list[str]] = {}
    for variant, kind in dict.fromkeys(zip(matrix["variant"], matrix["kind"])):
        groups.setdefault(str(kind), []).append(variant)
    return list(groups.items())


def _short(value: float) -> str:
    return f"{value:.2f}"


def plot_trait_matrix(matrix: pd.DataFrame, path: str | Path, title: str) -> None:
    """Heat map of the trait_matrix table: rows traits, columns variants grouped by kind (kinds in order of
    first appearance, the given order within a kind), colour scaled per trait row, cells annotated with
    the value and its 95% CI, "n/a" cells grey (see the module docstring)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if matrix.empty:
        raise ValueError("plot_trait_matrix: the trait matrix is empty")
    groups = _kind_groups(matrix)
    variants = [v for _, members in groups for v in members]
    traits = list(dict.fromkeys(matrix["trait"]))
    stats = dict(zip(matrix["trait"], matrix["stat"]))
    cell = {(r.variant, r.trait): r for r in matrix.itertuples(index=False)}
    shape = (len(traits), len(variants))
    value, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    unparseable = np.zeros(shape, dtype=bool)
    for i, trait in enumerate(traits):
        for j, variant in enumerate(variants):
            r = cell.get((variant, trait))
            if r is None:
                continue
            value[i, j], low[i, j], high[i, j] = _num(r.value), _num(r.ci_low), _num(r.ci_high)
            unparseable[i, j] = not _is_missing(r.n_unparseable) and int(r.n_unparseable) > 0

    scaled = np.full(shape, np.nan)
    for i in range(len(traits)):
        row = value[i]
        if np.isfinite(row).any():
            lo, hi = np.nanmin(row), np.nanmax(row)
            scaled[i] = (row - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(row), 0.5, np.nan)

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * len(variants) + 3.0), max(3.0, 0.95 * len(traits) + 2.2)))
    image = ax.imshow(np.ma.masked_invalid(scaled), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    fontsize = 7 if len(variants) > 8 else 8
    for i in range(len(traits)):
        for j in range(len(variants)):
            if not np.isfinite(value[i, j]):
                text, colour = "n/a", "0.3"
            else:
                text = _short(value[i, j]) + ("*" if unparseable[i, j] else "")
                if np.isfinite(low[i, j]) and np.isfinite(high[i, j]):
                    text += f"\n[{_short(low[i, j])}, {_short(high[i, j])}]"
                colour = "white" if scaled[i, j] < 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)

    ax.set_yticks(range(len(traits)), [f"{t}\n({stats[t]})" for t in traits], fontsize=8)
    ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.tick_params(length=0)
    start = 0
    for k, (kind, members) in enumerate(groups):
        if k:
            ax.axvline(start - 0.5, color="white", lw=4)
        ax.text(start + (len(members) - 1) / 2, 1.01, kind, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=9, fontweight="bold")
        start += len(members)
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, ticks=[0, 1])
    bar.ax.set_yticklabels(["row min", "row max"], fontsize=8)
    bar.set_label("value scaled within each trait row", fontsize=8)
    notes = ["cells: value, 95% CI below; grey n/a: no parseable judgement"]
    if unparseable.any():
        notes.append("*: some judge replies unparseable (left out of the value, counted in the tables)")
    ax.set_xlabel("; ".join(notes), fontsize=8, labelpad=8)
    ax.set_title(title, pad=22)
    _save(fig, path)
    plt.close(fig)


def _error_bars(points: pd.DataFrame, centre: np.ndarray, who: str) -> np.ndarray:
    """(2, n) distances from the value to the CI bounds of `who` ("teacher" or "student"); 0 without a CI."""
    low = points[f"{who}_ci_low"].to_numpy(dtype=float)
    high = points[f"{who}_ci_high"].to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([centre - low, high - centre]))


def plot_teacher_vs_student(pairs: pd.DataFrame, path: str | Path, title: str) -> None:
    """One panel per trait: teacher's score (x) against its pure student's (y), 95% CI bars, teacher names
    at the points, the y = x diagonal; teachers without a score listed under the panel; Pearson r in the
    panel title when >= 3 teachers have both scores."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if pairs.empty:
        raise ValueError("plot_teacher_vs_student: no teacher-student pairs (no pure variant?)")
    traits = list(dict.fromkeys(pairs["trait"]))
    ncols = min(len(traits), 3)
    nrows = math.ceil(len(traits) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 4.8 * nrows), squeeze=False)
    for ax in axes.flat[len(traits):]:
        ax.set_visible(False)
    for ax, trait in zip(axes.flat, traits):
        rows = pairs[pairs["trait"] == trait]
        stat = rows["stat"].iloc[0]
        x, y = rows["teacher_value"].to_numpy(dtype=float), rows["student_value"].to_numpy(dtype=float)
        both = np.isfinite(x) & np.isfinite(y)
        points = rows[both]
        px, py = x[both], y[both]
        if both.any():
            ax.errorbar(px, py, xerr=_error_bars(points, px, "teacher"), yerr=_error_bars(points, py, "student"),
                        fmt="o", capsize=3, ms=5,
                        color="tab:blue", ecolor="tab:blue", elinewidth=1)
            for name, xi, yi in zip(points["teacher"], px, py):
                ax.annotate(str(name), (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
        extent = np.concatenate([px, py, *(points[c].to_numpy(dtype=float) for c in
                                           ("teacher_ci_low", "teacher_ci_high", "student_ci_low",
                                            "student_ci_high"))])
        extent = extent[np.isfinite(extent)]
        if extent.size:
            lo, hi = float(extent.min()), float(extent.max())
        else:
            lo, hi = (0.0, 1.0) if stat == "rate" else (0.0, 10.0)
        pad = 0.08 * (hi - lo) if hi > lo else max(0.05, 0.1 * abs(hi))
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
        ax.set_ylabel(f"pure student {stat}")
        heading = f"{trait} ({stat})"
        if both.sum() >= 3 and np.std(px) > 0 and np.std(py) > 0:
            heading += f"\nPearson r = {np.corrcoef(px, py)[0, 1]:.2f} (n = {int(both.sum())})"
        ax.set_title(heading, fontsize=10)
        if not both.any():
            ax.text(0.5, 0.5, "no teacher with both scores", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="0.4")
        notes = []
        for label, column in (("teacher", "teacher_value"), ("student", "student_value")):
            absent = rows.loc[rows[column].isna(), "teacher"].astype(str).tolist()
            if absent:
                notes.append(f"no {label} score: {', '.join(absent)}")
        ax.set_xlabel("\n".join([f"teacher {stat}", *notes]), fontsize=9)  # notes in the label: laid out with it
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_subset_sizes(sizes: pd.DataFrame, path: str | Path, title: str) -> None:
    """Horizontal bars: prompts selected per selector (coloured by kind, rule or judge) over a faint bar of
    the manifest size, annotated "size / n_prompts (pct%)" and the unparseable count when > 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if sizes.empty:
        raise ValueError("plot_subset_sizes: no selector sizes")
    colours = {"rule": "tab:blue", "judge": "tab:orange"}
    size = sizes["size"].to_numpy(dtype=float)
    total = sizes["n_prompts"].to_numpy(dtype=float)
    unparseable = pd.to_numeric(sizes["n_unparseable"], errors="coerce").fillna(0).to_numpy(dtype=float)
    y = np.arange(len(sizes))
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.45 * len(sizes) + 1.3)))
    ax.barh(y, np.nan_to_num(total), color="0.9", edgecolor="0.7", height=0.7)
    ax.barh(y, np.nan_to_num(size), color=[colours.get(k, "tab:grey") for k in sizes["kind"]], height=0.7)
    for yi, s, t, u in zip(y, size, total, unparseable):
        pct = f"{100 * s / t:.1f}%" if t > 0 and np.isfinite(s) else "n/a"
        label = f"{s:.0f} / {t:.0f} ({pct})" if np.isfinite(s) and np.isfinite(t) else "n/a"
        if u > 0:
            label += f", {u:.0f} unparseable"
        end = np.nanmax([s, t]) if np.isfinite([s, t]).any() else 0.0
        ax.text(end, yi, "  " + label, va="center", fontsize=8)
    right = np.nanmax(np.concatenate([size, total])) if np.isfinite(np.concatenate([size, total])).any() else 1
    ax.set_xlim(0, 1.5 * max(right, 1))
    ax.set_yticks(y, sizes["selector"].astype(str).tolist(), fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("prompts selected (subset S); grey: whole manifest")
    present = list(dict.fromkeys(sizes["kind"]))
    ax.legend(handles=[Patch(color=colours.get(k, "tab:grey"), label=str(k)) for k in present], title="selector",
              fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
