import os
import subprocess
import sys

import pytest

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


def test_submit_builds_the_job_and_its_environment(tmp_path, capsys):
    from ray_jobs import submit

    assert submit.entrypoint("pretrain", ["--config", "a b.yaml", "--set", "x=1"]) == \
        "python -m ray_jobs.pretrain --config 'a b.yaml' --set x=1"
    env = submit.runtime_env(str(REPO / "cluster" / "runtime_env.yaml"), None)
    from pathlib import Path

    assert env["working_dir"] == str(Path.cwd().resolve())  # ".", as `ray job submit --working-dir .` reads it
    assert ".venv" in env["excludes"]
    assert submit.dashboard_address("10.0.0.5:6379") == "http://10.0.0.5:8265"
    assert submit.dashboard_address("http://head:8265") == "http://head:8265"
    # options before "--", the job's own after it; an unreachable cluster is a clear error
    assert cli.main(["submit", "prepare", "--address", "http://127.0.0.1:9", "--", "--config", "x.yaml"]) == 2
    assert "cannot reach the Jobs API at http://127.0.0.1:9" in capsys.readouterr().err
    assert cli.main(["submit", "prepare", "--runtime-env", str(tmp_path / "nope.yaml"), "--", "--config", "x"]) == 2
    assert "runtime env file not found" in capsys.readouterr().err


def test_sizing_prints_deepspeed_estimates(capsys):
    assert cli.main(["sizing", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| Qwen2.5-7B"))
    assert "| 7.07B | 8 |" in row  # built on the meta device from the published shape


def test_a_job_survives_its_working_directory_being_replaced(tmp_path, monkeypatch):
    """Ray may re-extract a submitted job's working_dir under the running driver: the path is
    there again, the process's current directory is the removed one."""
    import os

    import pytest
    import shutil

    from ray_jobs.common import keep_working_directory

    work = tmp_path / "working_dir"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(os, "getcwd", os.getcwd)  # a guard installed here is undone after the test
    keep_working_directory()
    shutil.rmtree(work)
    work.mkdir()
    assert os.getcwd() == str(work) and os.path.abspath("x") == str(work / "x")
    shutil.rmtree(work)  # gone for good: the error is the real one
    with pytest.raises(FileNotFoundError):
        os.getcwd()


def test_serve_set_of_a_deployment_option_wins_over_the_serve_config_file(tmp_path):
    """The committed serve config carries the deployment's options; `interest serve --set
    autoscaling.max_replicas=4` must change what deploys, and fields not given keep the file's
    values. An option the app does not have is refused before anything starts."""
    import yaml

    from interest_model.config import ConfigError
    from ray_jobs.serve import DEFAULT_CONFIG, deploy_config

    plain = deploy_config(str(DEFAULT_CONFIG), ["model=m"], "127.0.0.1", 8123)
    assert plain["applications"][0]["deployments"] == yaml.safe_load(DEFAULT_CONFIG.read_text())["applications"][0]["deployments"]
    edited = yaml.safe_load(DEFAULT_CONFIG.read_text())  # an operator's edit the override must keep
    (dep,) = edited["applications"][0]["deployments"]
    dep["autoscaling_config"]["downscale_delay_s"] = 30.0
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(edited))
    config = deploy_config(str(tmp_path / "serve.yaml"), ["model=m", "autoscaling.max_replicas=4", "replica_cpus=0.5"],
                           "127.0.0.1", 8123)
    (dep,) = config["applications"][0]["deployments"]
    assert dep["name"] == "InterestApi"
    assert dep["autoscaling_config"]["max_replicas"] == 4
    assert dep["autoscaling_config"]["min_replicas"] == 1
    assert dep["autoscaling_config"]["downscale_delay_s"] == 30.0
    assert dep["ray_actor_options"]["num_cpus"] == 0.5
    assert dep["max_ongoing_requests"] == 64  # not given: the file's
    with pytest.raises(ConfigError, match="ingress_replicas"):
        deploy_config(str(DEFAULT_CONFIG), ["model=m", "ingress_replicas=2"], "127.0.0.1", 8123)
    assert config["http_options"]["port"] == 8123


def test_serve_environment_sets_haproxy_only_where_there_is_one(monkeypatch):
    """SERVE_ENV fills what the environment leaves unset; without an HAProxy binary (macOS, where
    ray[serve] bundles none) Serve keeps its own proxy rather than failing to start."""
    from ray_jobs import serve

    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/no/such/haproxy")
    assert not serve.haproxy_available()
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH")
    if sys.platform == "linux":
        assert serve.haproxy_available()  # the one ray[serve] bundles
    for key in serve.SERVE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")  # the user's own choice stays
    monkeypatch.setattr(serve, "haproxy_available", lambda: True)
    serve.serve_environment()
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    for key in serve.SERVE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(serve, "haproxy_available", lambda: False)
    serve.serve_environment()
    assert not any(key in os.environ for key in serve.SERVE_ENV)


def test_object_store_memory_takes_sizes_and_refuses_nonsense(capsys):
    """--object-store-memory on every job: sizes with units; a bad one is one line before any work."""
    from ray_jobs.common import job_parser, parse_bytes

    assert parse_bytes("3G") == 3 * 2**30 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("100000000") == 10**8
    args = job_parser("interest prepare", "").parse_args(["--config", "x.yaml", "--object-store-memory", "1.5g"])
    assert args.object_store_memory == int(1.5 * 2**30)
    for bad in ("lots", "10M", ""):
        with pytest.raises(SystemExit) as exc:
            job_parser("interest prepare", "").parse_args(["--config", "x.yaml", "--object-store-memory", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--object-store-memory" in err and (bad == "" or bad in err)


def test_embed_without_its_items_is_one_line_before_any_cluster(capsys):
    assert cli.main(["embed", "--config", str(CONFIGS / "embed_demo.yaml"), "--set", "items=/no/such/items"]) == 2
    err = capsys.readouterr().err
    assert "no items at /no/such/items" in err and "Traceback" not in err
