"""sweep.verdict: the numbers in the text are the summary's, and the wording follows the CIs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from sweep.analysis.stats import AblationSummary, Cell, summarize
from sweep.reporting.verdict import fmt_p, fmt_points, summary_markdown_tables, verdict

# validation-accuracy effect of keep 0.5 per size: planted at 500, none at 2000
EFFECT = {500: 0.03, 2000: 0.0}


def cells(n_seeds: int = 5, effect: dict[int, float] = EFFECT, spread: float = 0.004) -> list[Cell]:
    """Paired cells whose keep-0.5 differences are ``effect`` + symmetric per-seed offsets.

    The offsets sum to zero, so the mean difference is exactly the effect and a
    zero effect gives an interval around 0 (the wording, not the statistics, is
    under test here; test_stats covers the statistics).
    """
    rng = np.random.default_rng(42)
    offsets = spread * np.linspace(-1.0, 1.0, n_seeds)
    out = []
    for size, eff in effect.items():
        for seed in range(n_seeds):
            base = 0.40 + rng.normal(0, 0.02)  # between-seed spread, removed by pairing
            for keep in (1.0, 0.5):
                acc = base + (eff + offsets[seed] if keep == 0.5 else 0.0)
                gap = 0.45 if keep == 1.0 else 0.25 + offsets[seed]
                out.append(Cell(size, keep, seed, acc, acc + gap, acc, gap, 1.6 - acc,
                                [1, 2], [0.5, acc + gap], [0.3, acc]))
    return out


def summary_of(c: list[Cell]) -> AblationSummary:
    return summarize(c, rng=np.random.default_rng(0), n_resamples=300)


NUM = r"([+−]?[\d.]+)"
SENTENCE = re.compile(
    r"With ([\d,]+) training examples, keep ([\d.]+) vs no dropout: "
    rf"validation accuracy {NUM} points \(95 % CI {NUM} to {NUM}, p (=|<) ([\d.]+) "
    r"Holm-adjusted, (\d+) seeds\), ([^;]+); "
    rf"train−val gap {NUM} points \(95 % CI {NUM} to {NUM}, p (=|<) ([\d.]+) Holm-adjusted\), "
    r"([^.]+)\."
)


def num(text: str) -> float:
    return float(text.replace("−", "-"))


def check_p(op: str, text: str, p: float) -> None:
    if op == "<":
        assert p < float(text)
    else:
        assert float(text) == pytest.approx(float(f"{p:.2g}"))


def test_numbers_in_the_text_are_the_summarys() -> None:
    summ = summary_of(cells())
    text = verdict(summ)
    found = SENTENCE.findall(text)
    assert len(found) == 2
    for (size, keep, d, lo, hi, op, p, n, _words, gd, glo, ghi, gop, gp, gwords) in found:
        comp = summ.comparisons[(int(size.replace(",", "")), float(keep))]
        acc, gap = comp.results["best_val_acc"], comp.results["gap"]
        for shown, value in ((d, acc.mean_diff), (lo, acc.diff.low), (hi, acc.diff.high),
                             (gd, gap.mean_diff), (glo, gap.diff.low), (ghi, gap.diff.high)):
            assert num(shown) == pytest.approx(round(value * 100, 1), abs=1e-9)
        check_p(op, p, acc.p_t_holm)
        check_p(gop, gp, gap.p_t_holm)
        assert int(n) == acc.n == 5
        assert gwords == "smaller with dropout"  # -20 points, clearly
    by_size = {s: w for s, _, _, _, _, _, _, _, w, *_ in found}
    assert by_size["500"] == "higher with dropout"  # planted +3 points
    assert by_size["2,000"] == "no detectable effect"  # null effect: CI covers 0
    assert summ.comparisons[(2000, 0.5)].results["best_val_acc"].diff.covers(0.0)


def test_best_keep_prob_is_named_per_size() -> None:
    text = verdict(summary_of(cells(effect={500: 0.03, 2000: -0.03})))
    paragraphs = {p.split(".**")[0]: p for p in text.split("\n\n") if p.startswith("**")}
    assert "Best keep_prob: 0.5," in paragraphs["**500 training examples"]
    assert "picked after looking" in paragraphs["**500 training examples"]
    assert "Best keep_prob: 1 (no dropout)" in paragraphs["**2,000 training examples"]
    assert "lower with dropout" in text


def test_best_keep_prob_value_matches_summary() -> None:
    summ = summary_of(cells())
    m = re.search(rf"Best keep_prob: 0.5, mean best validation accuracy {NUM} %, "
                  rf"95 % CI {NUM} to {NUM}", verdict(summ))
    assert m is not None
    iv = summ.cells[(500, 0.5)].intervals["best_val_acc"]
    assert [num(g) for g in m.groups()] == pytest.approx(
        [round(iv.mean * 100, 1), round(iv.low * 100, 1), round(iv.high * 100, 1)])


def test_few_seeds_caveats() -> None:
    two = verdict(summary_of(cells(n_seeds=2)))
    assert two.count("Caveat: only 2 seeds") == 2
    assert "Caveat" not in verdict(summary_of(cells(n_seeds=3)))
    one = verdict(summary_of(cells(n_seeds=1)))
    assert "a single seed at 500 examples" in one
    assert "(1 seed: no interval or test)" in one
    assert "cannot be judged from 1 seed" in one


def test_not_significant_after_holm_is_said() -> None:
    # 3 seeds, offsets -a, 0, +a: t = eff / (a / sqrt 3) = 4.81, raw p = 0.041 at both
    # sizes, so the CI excludes 0 while Holm over the 2 comparisons gives p = 0.081.
    summ = summary_of(cells(n_seeds=3, effect={500: 0.01, 2000: 0.01}, spread=0.0036))
    res = summ.comparisons[(500, 0.5)].results["best_val_acc"]
    assert not res.diff.covers(0.0) and 0.05 < res.p_t_holm < 0.1
    text = verdict(summ)
    assert text.count("higher with dropout, but not significant after Holm correction") >= 2


def test_notes_and_other_baselines() -> None:
    c = [x for x in cells() if not (x.size == 500 and x.keep_prob == 0.5 and x.seed == 4)]
    assert "seeds [4] lack a partner" in verdict(summary_of(c))
    no_base = [x for x in cells() if not (x.size == 2000 and x.keep_prob == 1.0)]
    text = verdict(summary_of(no_base))
    assert "(no keep 1 runs at this size)" in text and "no keep_prob=1.0 runs" in text
    assert "Best keep_prob: 0.5" in text.split("**2,000 training examples.**")[1]
    shifted = [Cell(x.size, 0.9 if x.keep_prob == 1.0 else x.keep_prob, x.seed, x.best_val_acc,
                    x.final_train_acc, x.final_val_acc, x.gap, x.val_loss, x.epochs, x.train_acc,
                    x.val_acc) for x in cells()]
    summ = summarize(shifted, baseline_keep=0.9, rng=np.random.default_rng(0), n_resamples=50)
    assert "keep 0.5 vs keep 0.9:" in verdict(summ)


def test_requires_best_val_acc() -> None:
    summ = summarize(cells(), metrics=("gap",), rng=np.random.default_rng(0), n_resamples=50)
    with pytest.raises(ValueError, match="best_val_acc"):
        verdict(summ)


def table_rows(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_markdown_tables_match_summary() -> None:
    summ = summary_of(cells())
    md = summary_markdown_tables(summ)
    per_cell = table_rows(md, "| size | keep_prob | seeds")
    assert len(per_cell) == len(summ.cells)
    size, keep, seeds, acc = per_cell[0][:4]
    iv = summ.cells[(int(size.replace(",", "")), float(keep))].intervals["best_val_acc"]
    m = re.fullmatch(rf"{NUM} \[{NUM}, {NUM}\]", acc)
    assert m is not None and int(seeds) == iv.n
    assert [num(g) for g in m.groups()] == pytest.approx(
        [round(v * 100, 1) for v in (iv.mean, iv.low, iv.high)])

    paired = table_rows(md, "| size | keep_prob | metric")
    assert len(paired) == len(summ.comparisons) * len(summ.metrics)
    labels = {"best val acc": "best_val_acc", "final train acc": "final_train_acc", "final val acc": "final_val_acc",
              "train−val gap": "gap", "val loss": "val_loss"}
    for row in paired:
        size, keep, metric, n, diff, _ci, p_t, p_t_h, p_w, p_w_h, d_z, _g_z = row
        res = summ.comparisons[(int(size.replace(",", "")), float(keep))].results[labels[metric]]
        scale, digits = (1.0, 3) if metric == "val loss" else (100.0, 1)
        assert num(diff) == pytest.approx(round(res.mean_diff * scale, digits))
        for shown, p in ((p_t, res.p_t), (p_t_h, res.p_t_holm), (p_w, res.p_wilcoxon),
                         (p_w_h, res.p_wilcoxon_holm)):
            assert shown == fmt_p(p)
        assert num(d_z) == pytest.approx(round(res.d_z, 2))
        assert int(n) == res.n
    assert "Holm" in md and "2/2^n" in md


def test_formatters() -> None:
    assert fmt_points(0.012) == "+1.2" and fmt_points(-0.38) == "−38.0"
    assert fmt_points(0.5, signed=False) == "50.0" and fmt_points(math.nan) == "n/a"
    assert fmt_p(0.1149) == "0.11" and fmt_p(0.00042) == "<0.001"
    assert fmt_p(1.0) == "1" and fmt_p(math.nan) == "n/a"
