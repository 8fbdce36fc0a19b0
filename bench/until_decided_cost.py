"""How many trainings does `sweep ablate --until-decided` use against the fixed designs, for the same verdict?

Two designs of docs/results.md, on digits (offline; a CIFAR-10 run is the same
command with the dataset left as the file says):

  cs231n  examples/cs231n-dropout.toml: keep 1 vs 0.25 at 500 examples; fixed 5 seeds
          (results.md (1)) and 10 seeds ((1b)); --until-decided --max-seeds 10.
  vary    examples/cifar10-vary.toml: keep {1, 0.75, 0.5} x normalization {none, batchnorm,
          layernorm}; fixed 12 seeds (V1); --until-decided --max-seeds 12. Size 1 000
          on digits (it has ~1 250 training rows; the file's 2 000 is kept on CIFAR-10).

Each design is trained twice in a fresh folder: the fixed grid, then the
sequential ablation (its own parent run, so it trains its own cells). A cell's
result depends only on its seed index, so the sequential run's cells are the
fixed grid's first seeds. Verdict per comparison of best validation accuracy:
fixed, "helps"/"hurts" when the 95 % t-interval excludes 0 and the
Holm-adjusted p <= 0.05 (the report's headline rule); sequential, the side of
a decided anytime interval, else "no detectable effect".

    python bench/until_decided_cost.py [cs231n|vary|both] [--jobs 2] [--dataset digits] [--precision 2]

A third run adds `--precision` (a comparison also stops once its anytime
interval is that many points wide: the target for effects near 0, which
otherwise run to the cap). Prints each design's trainings, the ratio and
both verdicts per comparison.
Trainings do not depend on the machine's load; the wall times printed do.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = {  # name: (file, overrides, fixed seeds compared, cap)
    "cs231n": ("examples/cs231n-dropout.toml", {}, (5, 10), 10),
    "vary": ("examples/cifar10-vary.toml", {"sizes": [1000]}, (12,), 12),
}


def cells_of(workdir: Path, cfg: Any, name: str) -> tuple[list[Any], dict[str, str]]:
    """The finished cells (sweep.analysis.stats.Cell) and parent params of ablation `name`."""
    from sweep.paths import paths_of_config
    from sweep.reporting.report import load_ablations
    from sweep.tracking.store import default_tracking_uri, make_client

    client = make_client(default_tracking_uri(workdir))
    exp = client.get_experiment_by_name(cfg.study_name)
    [ab] = [a for a in load_ablations(client, exp.experiment_id, paths_of_config(workdir, cfg).key) if a.name == name]
    return ab.cells, ab.params


def fixed_verdicts(cells: list[Any], seeds: int, vary: Any) -> dict[tuple[Any, ...], str]:
    """(size, levels, keep) -> helps | hurts | no detectable effect, from the first `seeds` seeds."""
    from sweep.analysis.factorial import summarize_factorial
    from sweep.analysis.stats import summarize

    used = [c for c in cells if c.seed < seeds]
    rng = np.random.default_rng(0)
    if any(c.levels for c in used):
        per_level = summarize_factorial(used, vary, rng=rng, n_resamples=99).per_level
    else:
        per_level = {(): summarize(used, rng=rng, n_resamples=99)}
    out = {}
    for levels, s in per_level.items():
        for (size, keep), comp in s.comparisons.items():
            r = comp.results["best_val_acc"]
            sure = r.p_t_holm <= 0.05 and not r.diff.covers(0.0)
            out[(size, levels, keep)] = ("helps" if r.mean_diff > 0 else "hurts") if sure else "no detectable effect"
    return out


def sequential_verdict(comp: Any) -> str:
    if comp.status != "decided":
        return "no detectable effect"
    return "helps" if comp.decision.anytime.low > 0 else "hurts"


def run_design(name: str, args: argparse.Namespace) -> None:
    import sweep
    from sweep.analysis.sequential import comparison_name
    from sweep.config.factors import parse_vary_text

    path, extra, fixed_seeds, cap = DESIGNS[name]
    with tempfile.TemporaryDirectory(prefix=f"until-{name}-") as tmp:
        work = Path(tmp)
        over: dict[str, Any] = {"dataset": args.dataset, "jobs": args.jobs, **(extra if args.dataset == "digits" else {})}
        t0 = time.monotonic()
        fixed = sweep.ablate(ROOT / path, workdir=work, seeds=max(fixed_seeds), out=io.StringIO(), progress=False,
                             tables=False, **over)
        t1 = time.monotonic()
        said = io.StringIO()
        seq = sweep.ablate(ROOT / path, workdir=work, until="decided", max_seeds=cap, out=said, progress=False,
                           tables=False, **over)
        t2 = time.monotonic()
        precise = sweep.ablate(ROOT / path, workdir=work, until="decided", max_seeds=cap, precision=args.precision,
                               out=io.StringIO(), progress=False, tables=False, **over)
        t3 = time.monotonic()
        cfg = sweep.load_config(ROOT / path, **over)
        cells, params = cells_of(work, cfg, fixed.name)
        seq_cells, _ = cells_of(work, cfg, seq.name)
        vary = parse_vary_text(params.get("vary", "")) or None
        decisions = seq.outcome.decisions
        print(f"== {name}: {path} on {args.dataset}, {len(decisions)} comparison(s), --jobs {args.jobs}")
        print(f"   fixed {max(fixed_seeds)} seeds: {fixed.outcome.trained} trainings, {t1 - t0:.0f} s wall; "
              f"--until-decided --max-seeds {cap}: {seq.outcome.trained} trainings "
              f"({len(seq_cells)} finished cells), {t2 - t1:.0f} s wall (loaded machine)")
        print(f"   --until-decided --max-seeds {cap} --precision {args.precision:g}: {precise.outcome.trained} "
              f"trainings, {t3 - t2:.0f} s wall")
        for seeds in fixed_seeds:
            n_fixed = len([c for c in cells if c.seed < seeds])
            verdicts = fixed_verdicts(cells, seeds, vary)
            for label, run in (("", seq), (f" --precision {args.precision:g}", precise)):
                decisions = run.outcome.decisions
                same = sum(verdicts[k] == sequential_verdict(c) for k, c in decisions.items())
                print(f"   fixed {seeds} seeds ({n_fixed} trainings) against --until-decided{label} "
                      f"({run.outcome.trained}): ratio {run.outcome.trained / n_fixed:.2f}; "
                      f"same verdict in {same} of {len(decisions)}")
                for k, c in sorted(decisions.items()):
                    iv = c.decision.anytime
                    print(f"     {comparison_name(k):<40} fixed: {verdicts[k]:<21} sequential: "
                          f"{sequential_verdict(c):<21} ({c.status} after {c.seeds} seeds, "
                          f"[{iv.low:+.2f}, {iv.high:+.2f}] points)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("design", nargs="?", default="both", choices=[*DESIGNS, "both"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--precision", type=float, default=2.0,
                        help="the third run's --precision, in points (default: 2)")
    parser.add_argument("--dataset", default="digits", choices=["digits", "cifar10"])
    args = parser.parse_args()
    for name in DESIGNS if args.design == "both" else [args.design]:
        run_design(name, args)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
