"""Issue 18, the command line as people read it: --help, the closing lines of ablate and report,
what `sweep status` says of ablations and reports, `sweep ui` / `sweep dashboard` addresses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from services import free_port
from sweep.cli import build_parser
from sweep.config.sweep_file import AblationConfig, SweepConfig
from sweep_helpers import SWEEP, load_study, run_cli, sweep_env

COMMANDS = ["run", "ablate", "compare", "report", "status", "sync", "ui", "dashboard", "check"]


def _help(command: str) -> dict[str, str]:
    """`sweep COMMAND --help` (a real subprocess), parsed: option (or positional) -> its help text."""
    proc = subprocess.run([*SWEEP, command, "--help"], capture_output=True, text=True, check=True,
                          env={**os.environ, "COLUMNS": "2000"})  # one line per option: easy to parse
    out: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        head = re.match(r"^  (-[\w-]+(?:, --[\w-]+)?|[a-z_]+|MODULE\[:CLASS\])(?: \S+)?(?:\s{2,}(.*))?$", line)
        if head:  # "  --flag METAVAR   help" or "  --flag METAVAR" with the help on the lines below
            current = head.group(1).split(", ")[-1]
            out[current] = head.group(2) or ""
        elif current and re.match(r"^\s{6,}\S", line):  # the help continues
            out[current] = (out[current] + " " + line.strip()).strip()
        else:
            current = None
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_that_states_its_default(command: str) -> None:
    flags = _help(command)
    assert flags, f"nothing parsed from `sweep {command} --help`"
    for flag, text in flags.items():
        if flag in ("--help", "--download", "--yes", "--timeout-kill", "MODULE[:CLASS]"):
            continue  # switches (off unless given) and the required target
        assert "default" in text, f"sweep {command} {flag}: no default in its help: {text!r}"
        assert "default: None" not in text, f"sweep {command} {flag}: {text!r}"


def test_help_defaults_are_the_configs_defaults() -> None:
    cfg, grid = SweepConfig(), AblationConfig()
    run, ablate = _help("run"), _help("ablate")
    assert f"else {cfg.trials})" in run["--trials"]
    assert f"else {cfg.pruner})" in run["--pruner"]
    assert f"else {cfg.space.epochs.value})" in run["--epochs"]
    assert f"else {cfg.seed})" in run["--seed"]
    assert "else " + ",".join(f"{k:g}" for k in grid.keep_probs) in ablate["--keep-probs"]
    assert f"else {grid.seeds})" in ablate["--seeds"]
    assert "(default: 5000)" in _help("ui")["--port"] and "(default: 127.0.0.1)" in _help("ui")["--host"]


def test_report_and_status_list_only_the_flags_they_use() -> None:
    report, status = set(_help("report")), set(_help("status"))
    assert report == {"config", "--help", "--dataset", "--study", "--storage", "--tracking-uri", "--out"}, report
    assert status == {"config", "--help", "--study", "--storage", "--tracking-uri"}, status
    # and the parser agrees with the help: a training flag is refused by report
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--epochs", "3"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A tiny digits sweep, an ablation and a report: (folder, ablate's stdout, report's stdout)."""
    work = tmp_path_factory.mktemp("readable")
    run_cli(work, "run", "--trials", "2", "--epochs", "1", "--jobs", "1")
    ablate = run_cli(work, "ablate", "--sizes", "100", "--seeds", "2", "--keep-probs", "1,0.5", "--epochs", "1",
                     "--jobs", "1").stdout
    report = run_cli(work, "report").stdout
    return work, ablate, report


def test_ablate_ends_with_a_summary_the_link_and_the_next_command(store: tuple[Path, str, str]) -> None:
    from sweep_helpers import mlflow_runs

    work, ablate, _ = store
    tail = ablate.rstrip().splitlines()[-3:]
    assert re.match(r"ablation-\w+: 4 cell\(s\) trained in \d+:\d\d:\d\d \(estimated \d+:\d\d:\d\d\); 4/4 cells done$",
                    tail[0]), tail
    _, parents, _ = mlflow_runs(work)
    parent = next(r for k, r in parents.items() if k.startswith("ablation:"))
    assert tail[1].startswith("  MLflow: http://127.0.0.1:5000/#/experiments/") and parent.info.run_id in tail[1], tail
    assert tail[2] == "  next: sweep report --study dropout-digits", tail


def test_a_rerun_of_a_done_ablation_says_nothing_was_trained(store: tuple[Path, str, str]) -> None:
    work, _, _ = store
    again = run_cli(work, "ablate", "--sizes", "100", "--seeds", "2", "--keep-probs", "1,0.5", "--epochs", "1",
                    "--jobs", "1").stdout
    assert re.search(r"0 cell\(s\) trained in \S+; 4/4 cells done \(4 done before or by another process\)", again), again


def test_report_ends_with_each_verdicts_opening_and_its_mlflow_page(store: tuple[Path, str, str]) -> None:
    from sweep_helpers import mlflow_runs

    work, _, report = store
    lines = report.rstrip().splitlines()
    assert re.match(r"ablation-\w+:$", lines[0]), lines
    # The verdict's one-sentence answer (issue 18's headline: it counts what survives Holm).
    assert lines[1].startswith("  In short (1 comparison, counting only differences that survive Holm"), lines
    folder = work / "reports" / "dropout-digits"
    assert lines[-3] == f"report written to {folder / 'report.md'}"
    assert lines[-2] == f"  the same with its figures in one page (opens in a browser): {folder / 'report.html'}"
    _, parents, _ = mlflow_runs(work)
    # report.html: MLflow's artifact view renders it with its figures (report.md's image links stay text there).
    assert lines[-1].startswith("  in MLflow: http://127.0.0.1:5000/#/experiments/1/runs/"
                                f"{parents['study'].info.run_id}/artifacts/report/report.html?"), lines[-1]


def test_status_tells_the_ablations_and_the_last_report_without_mlflow(store: tuple[Path, str, str]) -> None:
    work, _, _ = store
    proc = subprocess.run([*SWEEP[:1], "-c", "import sys; from sweep.cli import main; code = main(['status']); "
                           "print('mlflow imported:', 'mlflow' in sys.modules); sys.exit(code)"],
                          cwd=work, env=sweep_env(work), capture_output=True, text=True, check=True)
    out = proc.stdout
    assert re.search(r"  ablation ablation-\w+: 4/4 cells done \(complete, last run ended \S+\); parent run "
                     r"http://127\.0\.0\.1:5000/#/experiments/1/runs/\w+", out), out
    assert re.search(r"  last report: reports/dropout-digits/report\.md, written \d{4}-\d\d-\d\dT", out), out
    assert "mlflow imported: False" in out


def test_the_study_names_its_objective(store: tuple[Path, str, str]) -> None:
    assert load_study(store[0]).metric_names == ["best val accuracy"]


def _start(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SWEEP, *args], cwd=work, env=sweep_env(work), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen[str], port: int) -> None:
    proc.send_signal(signal.SIGTERM)  # to `sweep` alone: it must pass it on to the server
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the server did not stop on SIGTERM to `sweep`") from None
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True).stdout
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert left == "", "server left behind"


def _address_answers_when_printed(proc: subprocess.Popen[str], marker: str) -> str:
    """Read until the line with `marker`; the address on it must answer at once."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            url = line.split(marker, 1)[1].strip()
            base = url.split("#")[0].split("/dashboard")[0]
            with urllib.request.urlopen(base, timeout=5) as resp:  # no retry: it answers when printed
                assert resp.status == 200
            return url
    raise AssertionError(f"no line with {marker!r}; exited {proc.wait()}")


def test_ui_prints_its_address_once_the_server_answers(store: tuple[Path, str, str]) -> None:
    work, _, _ = store
    port = free_port()
    proc = _start(work, "ui", "--study", "dropout-digits", "--port", str(port))
    try:
        url = _address_answers_when_printed(proc, "open ")
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/1/runs?")
    finally:
        _stop(proc, port)


def test_dashboard_serves_the_local_journal_with_the_objective_named(store: tuple[Path, str, str]) -> None:
    work, _, _ = store
    port = free_port()
    proc = _start(work, "dashboard", "--study", "dropout-digits", "--port", str(port))
    try:
        url = _address_answers_when_printed(proc, "open ")
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/0", url
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0?after=0", timeout=10) as resp:
            study = json.load(resp)
        assert study["objective_names"] == ["best val accuracy"]
    finally:
        _stop(proc, port)


def test_dashboard_refuses_an_unknown_study_in_one_line(store: tuple[Path, str, str]) -> None:
    proc = run_cli(store[0], "dashboard", "--study", "nope", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--study" in proc.stderr and "dropout-digits" in proc.stderr


def test_dashboard_without_a_journal_says_so(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "dashboard", check=False)
    assert proc.returncode == 2 and "optuna.journal" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.journal").exists()


@pytest.mark.parametrize("command", ["ui", "dashboard"])
def test_a_port_in_use_is_refused_in_one_line(store: tuple[Path, str, str], command: str) -> None:
    import socket

    with socket.socket() as busy:  # another server's port: its answer must not pass for ours
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli(store[0], command, "--port", str(port), check=False, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and f"--port {port}" in proc.stderr and "open " not in proc.stdout
