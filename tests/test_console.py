"""The console of every `interest` command: quiet by default (stage lines, tables, errors), the
rest in a log file per run whose path is printed; --verbose / INTEREST_VERBOSE=1 bring it back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A job's shape without Ray: library output of every kind inside a session, then an error.
SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from ray_jobs.common import console_session, run_main
    from ray_jobs.console import CONSOLE

    class Args:
        verbose = "--verbose" in sys.argv
        log_level = "INFO"

    def main(argv):
        with console_session("job", sys.argv[1], Args()):
            logging.getLogger("ray.data").info("library log line")
            print("library print")
            os.write(2, b"written to fd 2 by C code\\n")
            warnings.warn("a library warning")
            with CONSOLE.stage("train model") as note:
                with CONSOLE.stage("inner stage"):
                    pass
                note.append("validation NDCG@10 0.1234")
            CONSOLE.out("| a | table |")
            if "--fail" in sys.argv:
                raise RuntimeError("the cluster went away")
        return 0

    raise SystemExit(run_main(main, None))
""")


def _run(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "INTEREST_VERBOSE" or env}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _log(tmp_path: Path) -> str:
    (path,) = (tmp_path / "out" / "logs").glob("job-*.log")
    return path.read_text()


def test_quiet_by_default_everything_else_in_the_log_file(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"log: .*/out/logs/job-\d{8}-\d{6}\.log", lines[0])
    assert lines[1:] == ["train model ...", "train model: done in 0.0 s; validation NDCG@10 0.1234", "| a | table |"]
    assert proc.stderr == ""
    log = _log(tmp_path)
    for text in ("library log line", "library print", "written to fd 2 by C code", "a library warning",
                 "inner stage: done in", "| a | table |"):
        assert text in log


def test_verbose_brings_the_libraries_back_to_the_console(tmp_path):
    for how in (["--verbose"], []):
        proc = _run(tmp_path, *how, env={} if how else {"INTEREST_VERBOSE": "1"})
        assert proc.returncode == 0, proc.stderr
        shown = proc.stdout + proc.stderr
        assert "library log line" in shown and "library print" in shown and "written to fd 2" in shown
        assert "| a | table |" in proc.stdout


def test_an_error_is_one_line_and_the_log_holds_the_traceback(tmp_path):
    proc = _run(tmp_path, "--fail")
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    assert err[0] == "error: RuntimeError: the cluster went away"
    assert re.fullmatch(r"log: .*/out/logs/job-.*\.log", err[1]) and len(err) == 2
    assert "train model: done in" in proc.stdout
    log = _log(tmp_path)
    assert "Traceback" in log and "RuntimeError: the cluster went away" in log


@pytest.mark.ray
def test_prepare_on_the_cluster_prints_its_summary_and_nothing_of_ray(ray_cluster, tiny_data, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    env.pop("INTEREST_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "prepare", "--config", str(REPO / "ray_jobs/configs/tiny.yaml"),
                           "--set", f"input.root={tiny_data}", "--set", f"output_dir={tmp_path}/prepared"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "prepare: done in" in out and "manifest:" in out and "input rows" in out
    assert len(out.splitlines()) < 40 and proc.stderr == ""
    assert "Ray" not in out and "Dataset" not in out  # Ray's and Ray Data's lines are in the log
    (log,) = (tmp_path / "logs").glob("prepare-*.log")  # next to the prepared data, not in it
    text = log.read_text()
    assert "prepare: kcore done" in text and "ray" in text.lower()
