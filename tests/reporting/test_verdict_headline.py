"""The verdict's headline and overview against hand-built summaries (issue 18).

Each summary is built by hand, result by result, so the Holm-adjusted p of
every comparison is chosen, not computed: the headline must count only what
survives the correction, name every case, and say when keep 1.0 never ran.
"""

from __future__ import annotations

import math

import numpy as np

from sweep.analysis.stats import AblationSummary, CellSummary, Comparison, CurveBand, Interval, PairedResult, summarize
from sweep.reporting.verdict import headline, overview, summary_markdown_tables, verdict


def iv(mean: float, half: float, n: int = 5) -> Interval:
    low, high = (mean - half, mean + half) if n >= 2 else (math.nan, math.nan)
    return Interval(mean, low, high, n, half / 2.78, 0.95, "t")


def paired(diff: float, half: float, p_holm: float, n: int = 5, d_z: float | None = None) -> PairedResult:
    """A paired result with mean difference `diff`, interval ± `half`, Holm-adjusted t p `p_holm`."""
    d = diff / (half / 2.78) if d_z is None else d_z
    return PairedResult(n, diff, iv(diff, half, n), d * math.sqrt(n), p_holm / 2, p_holm, d, d * 0.8,
                        p_t_holm=p_holm, p_wilcoxon_holm=min(1.0, p_holm * 2))


def cell(size: int, keep: float, acc: float, n: int = 5) -> CellSummary:
    band = CurveBand(np.array([1]), np.array([acc]), np.array([acc]), np.array([acc]), n)
    intervals = {"best_val_acc": iv(acc, 0.01, n), "final_train_acc": iv(acc + 0.1, 0.01, n),
                 "final_val_acc": iv(acc, 0.01, n), "gap": iv(0.1, 0.01, n), "val_loss": iv(1.0, 0.1, n)}
    return CellSummary(size, keep, tuple(range(n)), intervals, {"best_val_acc": iv(acc, 0.01, n)}, band, band)


def summary(results: dict[tuple[int, float], tuple[PairedResult, PairedResult]], baseline: float = 1.0,
            extra_cells: tuple[tuple[int, float], ...] = ()) -> AblationSummary:
    """results: (size, keep) -> (best_val_acc result, gap result) against `baseline`."""
    sizes = sorted({s for s, _ in results} | {s for s, _ in extra_cells})
    keeps = sorted({k for _, k in results} | {k for _, k in extra_cells} | {baseline}, reverse=True)
    cells = {(s, k): cell(s, k, 0.8) for s, k in results}
    cells.update({(s, baseline): cell(s, baseline, 0.8) for s, _ in results})
    cells.update({key: cell(*key, 0.8) for key in extra_cells})
    comps = {key: Comparison(key[0], key[1], baseline, tuple(range(5)), {"best_val_acc": acc, "gap": gap})
             for key, (acc, gap) in results.items()}
    return AblationSummary(("best_val_acc", "gap"), baseline, 0.95, tuple(sizes), tuple(keeps), cells, comps,
                           len(comps))


NONE = paired(0.001, 0.01, 1.0)  # interval covers 0


def test_the_headline_counts_only_what_survives_holm_and_names_every_case() -> None:
    # Four intervals below 0; only keep 0.25 at 100 examples survives Holm.
    summ = summary({
        (100, 0.25): (paired(-0.053, 0.02, 0.004), paired(-0.01, 0.02, 1.0)),
        (100, 0.5): (paired(-0.021, 0.015, 0.08), NONE),
        (300, 0.25): (paired(-0.018, 0.015, 0.09), NONE),
        (300, 0.5): (paired(-0.012, 0.010, 0.11), NONE),
    })
    first = verdict(summ).split("\n\n")[0]
    assert first == headline([("", summ)])
    assert first == ("In short (4 comparisons, counting only differences that survive Holm correction): "
                     "dropout never helped validation accuracy; keep 0.25 hurt it by 5.3 points at 100 examples; "
                     "the train−val gap did not shrink anywhere.")
    lines = overview([("", summ)])
    assert lines[1] == ("- Dropout hurt (interval below 0, Holm-adjusted p ≤ 0.05) in 1 of 4 comparisons: "
                        "keep 0.25 at 100 examples (−5.3).")
    # The other three are named, each of them, on their own line.
    assert lines[2] == ("- Interval excludes 0 but not significant after Holm correction in 3 of 4 comparisons: "
                        "keep 0.5 at 100 examples (−2.1), keep 0.25 at 300 examples (−1.8), "
                        "keep 0.5 at 300 examples (−1.2).")
    assert "more" not in verdict(summ, opening=True)


def test_every_case_is_named_however_many_and_the_gap_is_in_the_headline() -> None:
    hurt = {(s, 0.5): (paired(-0.01 * i, 0.005, 0.001), paired(-0.05, 0.01, 0.001))
            for i, s in enumerate((100, 200, 300, 400, 500), start=1)}
    summ = summary(hurt)
    text = verdict(summ)
    assert text.startswith("In short (5 comparisons, counting only differences that survive Holm correction): "
                           "dropout never helped validation accuracy; keep 0.5 hurt it by 5.0 points at 500 examples, "
                           "keep 0.5 by 4.0 points at 400 examples, keep 0.5 by 3.0 points at 300 examples, "
                           "keep 0.5 by 2.0 points at 200 examples and keep 0.5 by 1.0 points at 100 examples; "
                           "the train−val gap shrank in every one (by 5.0 points).")
    hurt_line = text.split("\n\n")[1].splitlines()[1]
    assert all(f"keep 0.5 at {s} examples" in hurt_line for s in (100, 200, 300, 400, 500))
    assert "and 2 more" not in text
    # Gap shrinking in some comparisons only: those are named.
    summ = summary({(100, 0.5): (paired(0.03, 0.01, 0.01), paired(-0.08, 0.02, 0.01)),
                    (300, 0.5): (NONE, paired(-0.02, 0.015, 0.2))})
    assert headline([("", summ)]) == (
        "In short (2 comparisons, counting only differences that survive Holm correction): dropout helped "
        "validation accuracy in 1 (keep 0.5 raised it by 3.0 points at 100 examples); it never hurt it; "
        "the train−val gap shrank in 1 of them (keep 0.5 narrowed it by 8.0 points at 100 examples).")


def test_a_zero_variance_difference_has_no_infinite_effect_size() -> None:
    # Every seed gave exactly −4 points: sd 0, so d_z = −inf and t's p is 0 by arithmetic.
    flat = PairedResult(5, -0.04, Interval(-0.04, -0.04, -0.04, 5, 0.0, 0.95, "t"), -math.inf, 0.0, 0.0625,
                        -math.inf, -math.inf, p_t_holm=0.0, p_wilcoxon_holm=0.0625)
    summ = summary({(100, 0.5): (flat, flat)})
    text, tables = verdict(summ), summary_markdown_tables(summ)
    assert "∞" not in text + tables
    row = next(r for r in tables.splitlines() if r.startswith("| 100 | 0.5 | best val acc"))
    assert row.endswith("| no variance | no variance |")
    assert ("validation accuracy −4.0 points on every one of 5 seeds (no variance: no interval, and the t-test's "
            "p < 0.001 Holm-adjusted says nothing more)") in text


def test_a_grid_without_keep_1_says_so() -> None:
    # Baseline keep 0.9, keep 1.0 never ran: the verdict cannot say whether dropout helps.
    summ = summary({(100, 0.5): (paired(-0.03, 0.01, 0.01), NONE)}, baseline=0.9)
    top = headline([("", summ)])
    assert top.endswith("This ablation compared against keep 0.9, never against keep 1.0 (no dropout): it says "
                        "whether more dropout than that helps, not whether dropout helps.")
    assert verdict(summ).startswith(top)
    # keep 1.0 at one size only: the other size compared nothing, and the headline says so.
    summ = summary({(100, 0.5): (paired(-0.03, 0.01, 0.01), NONE)}, extra_cells=((2000, 0.5),))
    assert headline([("", summ)]).endswith(
        "No keep 1.0 (no dropout) runs at 2,000 examples: nothing there was compared.")
    # Nothing compared at all.
    alone = summary({}, extra_cells=((100, 0.5), (300, 0.5)))
    assert headline([("", alone)]).startswith("In short: nothing here answers whether dropout helps")
    assert "No keep 1.0 (no dropout) runs at 100 and 300 examples" in headline([("", alone)])


def test_the_gap_column_can_be_recomputed_from_the_table_beside_it() -> None:
    from test_verdict import cells, table_rows

    md = summary_markdown_tables(summarize(cells(), rng=np.random.default_rng(0), n_resamples=50))
    header = next(ln for ln in md.splitlines() if ln.startswith("| size | keep_prob | seeds"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "final val acc (%)" in cols and "train−val gap = final train − final val (points)" in cols
    for row in table_rows(md, "| size | keep_prob | seeds"):
        value = {c: float(v.split(" ")[0].replace("−", "-")) for c, v in zip(cols, row, strict=False) if " [" in v}
        gap = value["final train acc (%)"] - value["final val acc (%)"]
        assert abs(value["train−val gap = final train − final val (points)"] - gap) <= 0.1 + 1e-9


def test_a_sweep_that_never_ran_keep_1_says_so() -> None:
    from sweep.reporting.verdict import sweep_baseline_note

    note = sweep_baseline_note([0.5, 0.65, 0.95, math.nan])
    assert note.startswith("No trial of this sweep ran keep_prob 1.0 (no dropout): its 3 trials span keep 0.5 to 0.95, "
                           "so the sweep itself never compared against no dropout")
    assert sweep_baseline_note([0.5, 1.0]) == "" and sweep_baseline_note([]) == ""
