import subprocess
import sys

from ray_jobs import cli
from tests.conftest import CONFIGS, REPO


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    assert "prepare" in capsys.readouterr().out


def test_every_job_has_a_subcommand_with_help(capsys):
    import pytest

    for job in ("prepare", "pretrain", "transfer", "evaluate", "benchmark", "tune"):
        assert job in cli.JOBS
        with pytest.raises(SystemExit) as exit_info:
            cli.main([job, "--help"])
        assert exit_info.value.code == 0 and "--config" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_broken_config_is_a_clear_error_before_any_work(tmp_path, capsys):
    rc = cli.main(["prepare", "--config", str(CONFIGS / "tiny.yaml"), "--set", "kcore.user_k=lots"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "kcore.user_k" in err and "Traceback" not in err


def test_missing_input_is_a_clear_error(tmp_path):
    # As a user runs it: a separate process, exit code and message.
    proc = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "prepare", "--config", str(CONFIGS / "tiny.yaml"),
                           "--set", f"input.root={tmp_path}"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 2
    assert "no input file matches" in proc.stderr and "Traceback" not in proc.stderr


def test_synthetic_data_command(tmp_path, capsys):
    assert cli.main(["data", "synthetic", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "shop-a" / "shop-a.inter").is_file()
    assert '"shop-b"' in capsys.readouterr().out


def test_evaluate_names_a_missing_model(ray_cluster, tmp_path, capsys):
    rc = cli.main(["evaluate", "--config", str(CONFIGS / "evaluate_demo.yaml"), "--set", f"models={{m: {tmp_path}/none}}",
                   "--set", "baselines=[]", "--num-cpus", "1"])
    assert rc == 2
    assert "no exported model" in capsys.readouterr().err
