"""Write examples/quickstart.ipynb (run from the repository root: `python examples/make_quickstart.py`).

The notebook is generated, not edited by hand, so its cells stay reviewable as
code; tests/test_notebook.py executes the result in a real kernel. Needs
nbformat (in the `test` extra).
"""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

BUILT_IN = [
    md("# Does dropout regularize? A quickstart from Python\n\n"
       "The same sweep, ablation and report as `sweep run`, `sweep ablate` and `sweep report`, "
       "driven from a notebook. `keep_prob` is the probability of **keeping** a unit (1.0 = no dropout).\n\n"
       "Everything is written in this notebook's folder: `optuna.journal` (the study), `mlflow.db` "
       "(the curves: `sweep ui` shows them) and `reports/`."),
    code("import io\n\nimport sweep\n\n"
         "# The built-in digits sweep (offline), made small enough to run in a minute on 2 cores.\n"
         "cfg = sweep.load_config(trials=6, epochs=4, num_train=500, jobs=2)\n"
         "cfg.study_name, cfg.trials"),
    md("## 1. The sweep\n\nOptuna proposes keep probability, hidden sizes, learning rate and normalization; "
       "the progress bar counts trials (the terminal's progress lines go to `log`)."),
    code("log = io.StringIO()\nresult = sweep.run(cfg, out=log)\nresult"),
    code("result.trials.filter(regex=\"^(number|state|value|params_.*)$\")"),
    md("## 2. The ablation: the best configuration re-trained at fixed keep probabilities, paired by seed"),
    code("ablation = sweep.ablate(cfg, keep_probs=[1.0, 0.5], sizes=[300], seeds=3, out=log)\nablation"),
    code("ablation.comparisons.query(\"metric == 'best_val_acc'\")"
         "[[\"size\", \"keep_prob\", \"n\", \"mean_diff\", \"low\", \"high\", \"p_t_holm\"]]"),
    md("## 3. The report, its verdict and a figure"),
    code("report = sweep.report(cfg, out=log)\nreport"),
    code("from IPython.display import Image\n\nImage(filename=str(report.figures[0]))"),
    md("## 4. The best network, back as a `model.FullyConnectedNet`"),
    code("study = sweep.load_study(cfg)\nnet = study.best_model()\n"
         "data = sweep.data.load_dataset(\"digits\", num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed)\n"
         "test_acc = (net.loss(data[\"X_test\"]).argmax(axis=1) == data[\"y_test\"]).mean()\n"
         "print(f\"best trial {study.best_trial}: test accuracy {100 * test_acc:.1f} %\")"),
]

OWN = [
    md("# Part 2: your own implementation\n\n"
       "## 5. Check your layers\n\n"
       "`sweep check` runs a cs231n assignment's layer functions against this project's reference. "
       "Here: the repository's `tests/fixtures/dropout_writeup.py`, the mistake this project grew out of "
       "(`keep_prob = 1 - p` under a docstring that says p is kept). For yours: "
       "`run_check(\"cs231n.layers\", model_path=\"~/assignment2\")`, or `sweep check` in a terminal."),
    code("from pathlib import Path\n\nfrom sweep.check import run_check\n\n"
         "fixtures = Path(sweep.__file__).resolve().parents[1] / \"tests\" / \"fixtures\"  # a checkout of the repository\n"
         "exit_code = run_check(\"dropout_writeup\", model_path=str(fixtures))  # 0 all hold, 1 something is wrong"),
    md("## 6. Sweep and ablate your own net\n\n"
       "`model=\"MODULE:CLASS\"` (a module on `model_path`, or a .py file) trains your cs231n-style "
       "`FullyConnectedNet` instead of the built-in one, in its own study. It is checked first, and the first "
       "line of the log says what its dropout keyword was measured to mean."),
    code("own = sweep.load_config(model=f\"{fixtures / 'cs231n_net.py'}:FullyConnectedNet\", study=\"my-net\",\n"
         "                        trials=3, epochs=4, num_train=500, jobs=2)\n"
         "own_log = io.StringIO()\nsweep.run(own, out=own_log, progress=False)\n"
         "print(own_log.getvalue().splitlines()[0])"),
    code("sweep.ablate(own, keep_probs=[1.0, 0.5], sizes=[300], seeds=3, out=own_log)"),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = BUILT_IN + OWN
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, Path(__file__).resolve().parent / "quickstart.ipynb")


if __name__ == "__main__":
    main()
