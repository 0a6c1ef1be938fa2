"""Figures and tables from judged answers and training logs.

Every EM number names its convention (Betley or Model Organisms) in the table column and figure title.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from . import metrics
from .probes import FORMATS
from .provenance import atomic_output

CONVENTIONS = {"betley": metrics.em_betley, "model_organisms": metrics.em_model_organisms}


def load_answers(paths: dict[str, str]) -> pd.DataFrame:
    """Concatenate answers.jsonl files; the dict key becomes the `model` column."""
    frames = []
    for label, path in paths.items():
        frame = pd.read_json(path, lines=True)
        frame["model"] = label
        frames.append(frame.drop(columns=["judge"], errors="ignore"))
    df = pd.concat(frames, ignore_index=True)
    for col in ("aligned", "coherent"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _convention_args(name: str, min_coherent: int) -> dict:
    return {"min_coherent": min_coherent} if name == "betley" else {}


def em_overall(df: pd.DataFrame, n_boot: int, seed: int, min_coherent: int) -> pd.DataFrame:
    """EM per model and format, pooled over questions, under both conventions."""
    return pd.concat([metrics.overall(df, name, by=("model", "format"), n_boot=n_boot, seed=seed,
                                      **_convention_args(name, min_coherent)).assign(convention=name)
                      for name in CONVENTIONS], ignore_index=True)


def em_tables(df: pd.DataFrame, n_boot: int, seed: int, min_coherent: int) -> dict[str, pd.DataFrame]:
    """Per-question and overall EM under both conventions, plus rates, keyed by table name."""
    by_q = ("model", "format", "question_id")
    per_question = [fn(df, by=by_q, n_boot=n_boot, seed=seed, **_convention_args(name, min_coherent))
                    .assign(convention=name) for name, fn in CONVENTIONS.items()]
    rates = metrics.rates(df, by=("model", "format"))
    numbers = (df.groupby(["model", "format"], dropna=False)["number_sequence"].agg(["mean", "sum", "count"])
               .rename(columns={"mean": "number_answer_rate", "sum": "n_number_answers", "count": "n_answers"})
               .reset_index())
    return {"em_per_question": pd.concat(per_question, ignore_index=True),
            "em_overall": em_overall(df, n_boot, seed, min_coherent),
            "rates": rates, "number_answers": numbers}


def write_table(df: pd.DataFrame, stem: str | Path) -> None:
    """The same table as CSV and Markdown, each written atomically."""
    stem = Path(stem)
    with atomic_output(stem.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(stem.with_suffix(".md")) as tmp:
        Path(tmp).write_text(df.to_markdown(index=False, floatfmt=".3f") + "\n")


def _save(fig, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_loss(training_log: str | Path, path: str | Path, title: str) -> None:
    """Train and validation loss against step, from the trainer's log_history."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [json.loads(line) for line in Path(training_log).read_text().splitlines() if line.strip()]
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        ax.plot(*zip(*train), label="train", marker=".")
    if val:
        ax.plot(*zip(*val), label="validation", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_em(per_question: pd.DataFrame, path: str | Path, convention: str, title: str) -> None:
    """EM rate per question, one panel per format, one bar per model, with 95% bootstrap CIs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = per_question[per_question["convention"] == convention]
    present = set(data["format"])
    formats = [f for f in FORMATS if f in present] + sorted(present - set(FORMATS))  # by resemblance to training
    models = list(dict.fromkeys(data["model"]))
    questions = list(dict.fromkeys(data["question_id"]))
    fig, axes = plt.subplots(1, len(formats), figsize=(4.5 * len(formats), 3.8), sharey=True, squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, fmt in zip(axes[0], formats):
        for i, model in enumerate(models):
            rows = data[(data["format"] == fmt) & (data["model"] == model)].set_index("question_id").reindex(questions)
            x = np.arange(len(questions)) + i * width
            rate = rows["em_rate"].to_numpy(dtype=float)
            err = np.vstack([rate - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - rate])
            ax.bar(x, np.nan_to_num(rate), width, yerr=np.nan_to_num(err), capsize=2, label=model)
            for xi, r in zip(x, rate):
                if np.isnan(r):  # dropped (too few coherent answers): say so instead of drawing a zero
                    ax.text(xi, 0.02, "n/a", ha="center", fontsize=6, rotation=90)
        ax.set_xticks(np.arange(len(questions)) + width * (len(models) - 1) / 2)
        ax.set_xticklabels(questions, rotation=60, ha="right", fontsize=7)
        ax.set_title(fmt)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"EM rate ({convention})")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def plot_number_answers(numbers: pd.DataFrame, path: str | Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = numbers.pivot(index="format", columns="model", values="number_answer_rate")
    pivot = pivot.reindex([f for f in FORMATS if f in pivot.index] + sorted(set(pivot.index) - set(FORMATS)))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("share of answers that are number lists")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)


def plot_training_curves(training_log: str | Path, path: str | Path, keys: dict[str, str], title: str) -> None:
    """One panel per logged metric (keys: log key -> axis label) against step, e.g. loss, accuracy, grad norm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [json.loads(line) for line in Path(training_log).read_text().splitlines() if line.strip()]
    present = {k: label for k, label in keys.items() if any(k in h for h in history)}
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(4 * max(len(present), 1), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], present.items()):
        points = [(h["step"], h[key]) for h in history if key in h and "eval_loss" not in h]
        ax.plot(*zip(*points), marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def plot_game_outcomes(outcomes: pd.DataFrame, path: str | Path, title: str) -> None:
    """Payoff per round and cooperation rate per opponent, one bar per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    panels = (("payoff_per_round", "payoff per round (1-4; 0 = malformed)", (0, 4)),
              ("cooperation_rate", "cooperation rate", (0, 1)), ("parse_failure_rate", "parse failure rate", (0, 1)))
    for ax, (column, label, ylim) in zip(axes, panels):
        pivot = outcomes.pivot(index="opponent", columns="model", values=column)
        pivot = pivot[list(dict.fromkeys(outcomes["model"]))]
        pivot.plot.bar(ax=ax, rot=0, legend=False)
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
        ax.set_ylabel(label)
        ax.set_ylim(*ylim)
        ax.set_xlabel("")
        ax.grid(alpha=0.3, axis="y")
    axes[-1].legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def es_epoch(label: str) -> int | None:
    """ES epoch a model label stands for: base -> 0, es_epochK -> K, any other label -> None."""
    if label == "base":
        return 0
    match = re.fullmatch(r"es_epoch(\d+)", label)
    return int(match.group(1)) if match else None


EPOCH_COLUMNS = ["model", "format", "convention", "em_rate", "ci_low", "ci_high", "dropped", "coherence_rate"]


def _em_and_coherence(overall: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """The em_overall table (one row per model, format, convention) with each model's coherence rate."""
    return overall.merge(rates[["model", "format", "coherence_rate"]], on=["model", "format"], how="left")


def em_by_epoch(overall: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """EM with CI (both conventions) and coherence rate of the base model (epoch 0) and each ES checkpoint.

    Input: the em_overall and rates tables of em_tables. Models that are neither base nor es_epochK are
    left out. Rows are ordered by convention, format and epoch as a number (es_epoch10 after es_epoch2).
    """
    df = _em_and_coherence(overall, rates)
    epochs = df["model"].map(es_epoch)
    df = df[epochs.notna()].assign(epoch=epochs.dropna().astype(int))
    return df.sort_values(["convention", "format", "epoch"])[["epoch"] + EPOCH_COLUMNS].reset_index(drop=True)


def sft_reference(overall: pd.DataFrame, rates: pd.DataFrame, label: str = "sft") -> pd.DataFrame:
    """The same columns as em_by_epoch (without epoch) for the SFT model, one row per convention and format."""
    df = _em_and_coherence(overall, rates)
    return df[df["model"] == label][EPOCH_COLUMNS].reset_index(drop=True)


def plot_em_vs_epoch(overall: pd.DataFrame, rates: pd.DataFrame, path: str | Path, title: str) -> None:
    """EM rate (one panel per convention, 95% CI bars) and coherence rate against ES epoch, epoch 0 = base.

    The SFT model on the same data is a dashed horizontal line in each panel, its CI a shaded band.
    Undefined EM (Betley: too few coherent answers) is not drawn; "n/a" marks the epoch instead.
    Input: the em_overall and rates tables of em_tables. Several prompt formats get a marker (ES) and a
    dash pattern (SFT) each.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_epoch, sft = em_by_epoch(overall, rates), sft_reference(overall, rates)
    present = set(by_epoch["format"])
    formats = [f for f in FORMATS if f in present] + sorted(present - set(FORMATS))
    style = {fmt: (marker, dash, f", {fmt}" if len(formats) > 1 else "")
             for fmt, marker, dash in zip(formats, "os^Dv", ["--", "-.", ":", (0, (5, 5)), (0, (1, 3))])}
    es_colour, sft_colour = "tab:blue", "tab:orange"

    def rows(table, convention, fmt):
        return table[(table["convention"] == convention) & (table["format"] == fmt)]

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    undefined = False
    for ax, convention in zip(axes, CONVENTIONS):
        for fmt in formats:
            marker, dash, suffix = style[fmt]
            es, ref = rows(by_epoch, convention, fmt), rows(sft, convention, fmt)
            rate = es["em_rate"].to_numpy(dtype=float)
            err = np.vstack([rate - es["ci_low"].to_numpy(dtype=float), es["ci_high"].to_numpy(dtype=float) - rate])
            ax.errorbar(es["epoch"], rate, yerr=np.nan_to_num(err), marker=marker, capsize=3, color=es_colour,
                        label=f"ES (epoch 0 = base){suffix}")
            for epoch in es["epoch"][np.isnan(rate)]:  # a gap in the line; say why
                ax.text(epoch, 0, "n/a", ha="center", va="bottom", fontsize=8, color=es_colour)
                undefined = True
            for _, r in ref.iterrows():
                if np.isnan(r["em_rate"]):
                    ax.text(0.99, 0.97, f"SFT: n/a{suffix}", transform=ax.transAxes, ha="right", va="top",
                            fontsize=8, color=sft_colour)
                    undefined = True
                    continue
                ax.axhline(r["em_rate"], ls=dash, color=sft_colour, label=f"SFT (same data){suffix}, band: 95% CI")
                ax.axhspan(r["ci_low"], r["ci_high"], color=sft_colour, alpha=0.15, lw=0)
        ax.set_ylabel(f"EM rate ({convention})")
    em_values = pd.concat([by_epoch, sft])[["em_rate", "ci_high"]].to_numpy(dtype=float)
    top = min(1.0, max(1.15 * np.nanmax(em_values), 0.05)) if np.isfinite(em_values).any() else 1.0
    for ax in axes[:2]:  # one scale for both conventions, so they compare at a glance
        ax.set_ylim(-0.02 * top, 1.02 * top)
    for fmt in formats:  # coherence does not depend on the convention: read it off the Betley rows
        marker, dash, _ = style[fmt]
        es, ref = rows(by_epoch, "betley", fmt), rows(sft, "betley", fmt)
        axes[2].plot(es["epoch"], es["coherence_rate"], marker=marker, color=es_colour)
        for value in ref["coherence_rate"]:
            axes[2].axhline(value, ls=dash, color=sft_colour)
    axes[2].set_ylabel("coherence rate (coherent >= 50)")
    axes[2].set_ylim(-0.02, 1.02)
    epochs = sorted(set(by_epoch["epoch"]))
    for ax in axes:
        ax.set_xlabel("ES epoch")
        ax.set_xticks(epochs, ["base" if e == 0 else str(e) for e in epochs])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("SFT"))  # ES first
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.06), fontsize=8)
    if undefined:
        fig.text(0.5, -0.1, "n/a: EM undefined, too few coherent answers on every question (the Betley "
                 "convention leaves incoherent answers out)", ha="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def epoch_starts(log: pd.DataFrame) -> dict[int, int]:
    """First iteration of each epoch in an ES training log (one row per iteration)."""
    return {int(epoch): int(first) for epoch, first in log.groupby("epoch")["iteration"].min().items()}


def plot_es_training(training_log: str | Path, path: str | Path, title: str) -> None:
    """ES reward (mean, ±std band, max), update norm and time split per iteration; dotted lines between epochs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = pd.read_json(training_log, lines=True).sort_values("iteration")
    x = log["iteration"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharex=True)
    ax = axes[0]
    ax.fill_between(x, log["reward_mean"] - log["reward_std"], log["reward_mean"] + log["reward_std"], alpha=0.25,
                    label="mean ± std over population")
    ax.plot(x, log["reward_mean"], label="mean")
    ax.plot(x, log["reward_max"], ls="--", label="max")
    ax.set_ylabel("reward")
    ax.legend(fontsize=8)
    axes[1].plot(x, log["update_norm"], marker=".")
    axes[1].set_ylabel("update norm")
    axes[1].ticklabel_format(axis="y", useOffset=False)  # norms barely move: show them, not an offset
    parts = {"noise": "time_noise_s", "generation": "time_generation_s", "reward": "time_reward_s",
             "update": "time_update_s"}
    axes[2].stackplot(x, *(log[c] for c in parts.values()), labels=list(parts), alpha=0.8)
    axes[2].plot(x, log["time_total_s"], color="black", lw=1, label="total")
    axes[2].set_ylabel("seconds per iteration")
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    starts = epoch_starts(log)
    for ax in axes:
        for first in list(starts.values())[1:]:
            ax.axvline(first - 0.5, ls=":", color="grey")
        ax.set_xlabel("iteration (dotted: new epoch)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
