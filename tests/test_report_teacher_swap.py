"""Tests for the teacher_swap report: the trait matrix tables, LaTeX output, teacher/student pairing, figures."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from PIL import Image

from emrepro import report_teacher_swap as rts
from emrepro.teacher_swap import expand_variants, trait_summary

TEACHERS = ["plain", "gloomy", "original"]
VARIANTS = expand_variants(TEACHERS, [["plain", "gloomy"]], ["date_mention"])
NAMES = [v["name"] for v in VARIANTS]


def rate(hits: int, misses: int, unparseable: int = 0) -> dict:
    return trait_summary([True] * hits + [False] * misses + [None] * unparseable)


def mean(scores: list, unparseable: int = 0) -> dict:
    return trait_summary(list(scores) + [None] * unparseable)


def student_summaries() -> dict[str, dict[str, dict]]:
    """Every variant gets distinct values, so a value copied from the wrong variant shows."""
    out = {}
    for i, name in enumerate(NAMES):
        out[name] = {"negative_emotion": mean([i, i + 1, i + 2], unparseable=i % 2),
                     "date_confusion": rate(i + 1, 10 - i)}
    out["pure_original"]["date_confusion"] = trait_summary([None, None], kind="rate")  # nothing parseable
    return out


TEACHER_SUMMARIES = {"plain": {"negative_emotion": mean([1, 2]), "date_confusion": rate(2, 8)},
                     "gloomy": {"negative_emotion": mean([8, 9, 9]), "date_confusion": rate(5, 5)}}


@pytest.fixture
def matrix() -> pd.DataFrame:
    return rts.trait_matrix(student_summaries(), VARIANTS)


def png_size(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# --------------------------------------------------------------------------- trait_matrix

def test_trait_matrix_rows_values_and_variant_columns(matrix):
    summaries = student_summaries()
    assert list(matrix.columns) == rts.MATRIX_COLUMNS
    assert len(matrix) == len(VARIANTS) * 2
    assert list(matrix["variant"]) == [n for n in NAMES for _ in range(2)]
    assert list(matrix["trait"]) == ["negative_emotion", "date_confusion"] * len(VARIANTS)
    by_name = {v["name"]: v for v in VARIANTS}
    for r in matrix.itertuples(index=False):
        s = summaries[r.variant][r.trait]
        assert r.stat == s["kind"] == ("mean" if r.trait == "negative_emotion" else "rate")
        for got, want in ((r.value, s[s["kind"]]), (r.ci_low, s["ci_low"]), (r.ci_high, s["ci_high"])):
            assert (math.isnan(got) and want is None) or got == pytest.approx(want)
        assert (r.n, r.n_parseable, r.n_unparseable) == (s["n"], s["n_parseable"], s["n_unparseable"])
        v = by_name[r.variant]
        assert r.kind == v["kind"] and r.teacher_a == v["teacher_a"]
        assert (pd.isna(r.teacher_b) and v["teacher_b"] is None) or r.teacher_b == v["teacher_b"]
        assert (pd.isna(r.selector) and v["selector"] is None) or r.selector == v["selector"]
    row = matrix[(matrix["variant"] == "interp_plain_gloomy_date_mention") & (matrix["trait"] == "date_confusion")]
    assert row["teacher_b"].item() == "gloomy" and row["selector"].item() == "date_mention"
    assert math.isnan(matrix.loc[(matrix["variant"] == "pure_original") & (matrix["trait"] == "date_confusion"),
                                 "value"].item())


def test_trait_matrix_follows_variant_order_and_first_trait_appearance():
    summaries = student_summaries()
    summaries["pure_gloomy"] = {"blackmail": rate(1, 1), **summaries["pure_gloomy"]}  # only this variant has it
    order = list(reversed(VARIANTS))
    m = rts.trait_matrix(summaries, order)
    assert list(dict.fromkeys(m["variant"])) == [v["name"] for v in order]
    first = order[0]["name"]
    assert list(m["trait"][:3]) == ["negative_emotion", "date_confusion", "blackmail"]
    assert len(m) == 3 * len(VARIANTS)
    missing = m[(m["trait"] == "blackmail") & (m["variant"] == first)]
    assert math.isnan(missing["value"].item()) and pd.isna(missing["n"].item())
    assert m.loc[(m["trait"] == "blackmail") & (m["variant"] == "pure_gloomy"), "value"].item() == 0.5


def test_trait_matrix_names_missing_variants():
    summaries = student_summaries()
    del summaries["filter_plain_date_mention"], summaries["pure_gloomy"]
    with pytest.raises(ValueError, match="filter_plain_date_mention") as err:
        rts.trait_matrix(summaries, VARIANTS)
    assert "pure_gloomy" in str(err.value)


def test_trait_matrix_rejects_rate_and_mean_for_one_trait():
    summaries = student_summaries()
    summaries["pure_gloomy"]["date_confusion"] = mean([1.0, 2.0])
    with pytest.raises(ValueError, match="date_confusion"):
        rts.trait_matrix(summaries, VARIANTS)


# --------------------------------------------------------------------------- matrix_wide and LaTeX

def test_matrix_wide_cells(matrix):
    wide = rts.matrix_wide(matrix)
    assert list(wide.columns) == ["variant", "negative_emotion", "date_confusion"]
    assert list(wide["variant"]) == NAMES
    cell = wide.set_index("variant")
    # pure_plain (i=0): scores 0, 1, 2 -> mean 1, sd 1, half width 1.96/sqrt(3); no unparseable
    half = 1.959963984540054 / math.sqrt(3)
    assert cell.loc["pure_plain", "negative_emotion"] == f"1.000 [{1 - half:.3f}, {1 + half:.3f}]"
    # pure_gloomy (i=1): one unparseable score
    assert cell.loc["pure_gloomy", "negative_emotion"].endswith("] (1 unparseable)")
    assert cell.loc["pure_gloomy", "negative_emotion"].startswith("2.000 [")
    assert cell.loc["pure_plain", "date_confusion"].startswith("0.091 [")  # 1 of 11
    assert cell.loc["pure_original", "date_confusion"] == "n/a (2 unparseable)"


def test_format_cell_edge_cases():
    assert rts.format_cell(None, None, None, 0) == "n/a"
    assert rts.format_cell(float("nan"), float("nan"), float("nan"), pd.NA) == "n/a"
    assert rts.format_cell(0.4215, 0.31, 0.5549, 3) == "0.421 [0.310, 0.555] (3 unparseable)"
    assert rts.format_cell(7.0, None, None, 0) == "7.000 (no CI)"  # a mean of one score has no interval


def test_write_latex(matrix, tmp_path):
    path = tmp_path / "tables" / "traits.tex"
    rts.write_latex(rts.matrix_wide(matrix), path)
    text = path.read_text()
    assert "\\begin{tabular}" in text and "\\end{tabular}" in text
    for name in NAMES:
        assert name.replace("_", "\\_") in text
    assert "interp_plain" not in text  # every underscore escaped
    assert "date\\_confusion" in text
    assert [p.name for p in path.parent.iterdir()] == ["traits.tex"]  # no temporary file left


# --------------------------------------------------------------------------- teacher_student_pairs

def test_pairs_use_the_teachers_own_pure_student(matrix):
    pairs = rts.teacher_student_pairs(matrix, TEACHER_SUMMARIES)
    assert list(pairs.columns) == rts.PAIR_COLUMNS
    assert list(dict.fromkeys(pairs["teacher"])) == TEACHERS  # only teachers with a pure student
    assert len(pairs) == 3 * 2
    for r in pairs.itertuples(index=False):
        assert r.student == f"pure_{r.teacher}"
        want = matrix[(matrix["variant"] == r.student) & (matrix["trait"] == r.trait)].iloc[0]
        for got, exp in ((r.student_value, want["value"]), (r.student_ci_low, want["ci_low"]),
                         (r.student_ci_high, want["ci_high"])):
            assert (math.isnan(got) and math.isnan(exp)) or got == exp
        assert r.stat == want["stat"]
    p = pairs.set_index(["teacher", "trait"])
    assert p.loc[("gloomy", "negative_emotion"), "student_value"] == 2.0  # pure_gloomy, not pure_plain (1.0)
    assert p.loc[("gloomy", "negative_emotion"), "teacher_value"] == pytest.approx(26 / 3)
    assert p.loc[("plain", "date_confusion"), "teacher_value"] == 0.2
    want = TEACHER_SUMMARIES["plain"]["date_confusion"]
    got = p.loc[("plain", "date_confusion")]
    assert (got["teacher_ci_low"], got["teacher_ci_high"]) == (want["ci_low"], want["ci_high"])
    original = pairs[pairs["teacher"] == "original"]
    assert len(original) == 2 and original["teacher_value"].isna().all()
    assert original.loc[original["trait"] == "negative_emotion", "student_value"].item() == 3.0


def test_pairs_ignore_variant_names_that_only_look_pure(matrix):
    """The pairing goes by kind and teacher_a: a 'filter' variant of teacher plain is no pure student."""
    pairs = rts.teacher_student_pairs(matrix[matrix["variant"] != "pure_plain"], TEACHER_SUMMARIES)
    assert "plain" not in set(pairs["teacher"])


def test_pairs_reject_rate_against_mean(matrix):
    bad = {"plain": {"date_confusion": mean([1.0, 2.0])}}
    with pytest.raises(ValueError, match="date_confusion"):
        rts.teacher_student_pairs(matrix, bad)


# --------------------------------------------------------------------------- figures

def test_plot_trait_matrix(matrix, tmp_path):
    path = tmp_path / "matrix.png"
    rts.plot_trait_matrix(matrix, path, "student traits")
    width, height = png_size(path)
    assert width > 700 and height > 300


def test_plot_trait_matrix_many_variants_and_missing_values(tmp_path):
    teachers = ["plain", "gloomy", "sunny", "angry"]
    variants = expand_variants(teachers, [["plain", "gloomy"], ["plain", "sunny"]], ["date_mention", "judge"])
    assert len(variants) >= 12
    summaries = {v["name"]: {"neg": mean([i % 10, 10 - i % 10]), "dc": rate(i, 20 - i, 1),
                             "bm": trait_summary([None], kind="rate")}  # an all-n/a row
                 for i, v in enumerate(variants)}
    summaries["pure_angry"]["neg"] = mean([4.0])  # a mean without CI
    path = tmp_path / "wide.png"
    rts.plot_trait_matrix(rts.trait_matrix(summaries, variants), path, "many variants")
    width, _ = png_size(path)
    assert width > 1200


def test_plot_trait_matrix_single_variant(tmp_path):
    variants = [{"name": "pure_plain", "kind": "pure", "teacher_a": "plain", "teacher_b": None, "selector": None}]
    m = rts.trait_matrix({"pure_plain": {"dc": rate(1, 3)}}, variants)
    path = tmp_path / "one.png"
    rts.plot_trait_matrix(m, path, "one variant")
    png_size(path)


def test_plot_teacher_vs_student(matrix, tmp_path):
    teachers = {**TEACHER_SUMMARIES, "original": {"negative_emotion": mean([3.0, 5.0])}}
    path = tmp_path / "tvs.png"
    rts.plot_teacher_vs_student(rts.teacher_student_pairs(matrix, teachers), path, "teacher vs student")
    width, height = png_size(path)
    assert width > 500 and height > 300
    # no teacher score at all, and NaN student values
    path2 = tmp_path / "tvs_nan.png"
    rts.plot_teacher_vs_student(rts.teacher_student_pairs(matrix, {}), path2, "no teacher scores")
    png_size(path2)


def test_plot_teacher_vs_student_single_pair(tmp_path):
    variants = [{"name": "pure_plain", "kind": "pure", "teacher_a": "plain", "teacher_b": None, "selector": None}]
    m = rts.trait_matrix({"pure_plain": {"dc": rate(1, 3)}}, variants)
    pairs = rts.teacher_student_pairs(m, {"plain": {"dc": rate(1, 3)}})  # identical scores: a point on y = x
    path = tmp_path / "one.png"
    rts.plot_teacher_vs_student(pairs, path, "one pair")
    png_size(path)


def test_plot_subset_sizes(tmp_path):
    sizes = pd.DataFrame({"selector": ["date_mention", "role_play", "judge_harm"], "kind": ["rule", "rule", "judge"],
                          "size": [120, 0, 300], "n_prompts": [1000, 1000, 1000], "n_unparseable": [0, None, 7]})
    path = tmp_path / "sizes.png"
    rts.plot_subset_sizes(sizes, path, "subset sizes")
    width, height = png_size(path)
    assert width > 500 and height > 150
    one = tmp_path / "one.png"
    rts.plot_subset_sizes(sizes.iloc[:1], one, "one selector")
    png_size(one)


@pytest.mark.parametrize("plot", [rts.plot_trait_matrix, rts.plot_teacher_vs_student, rts.plot_subset_sizes])
def test_plots_refuse_empty_tables(plot, tmp_path):
    with pytest.raises(ValueError):
        plot(pd.DataFrame(), tmp_path / "x.png", "empty")
    assert not (tmp_path / "x.png").exists()
