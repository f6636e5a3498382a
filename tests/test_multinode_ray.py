"""A real multi-node Ray cluster on this machine (a head without CPUs and two worker nodes, each
its own `ray start`), driven by the exact lines of README's "Try it on one machine" block: jobs go
through the Jobs API with `interest submit`, finish SUCCEEDED, stream their logs and leave their
outputs in the shared storage path; a job with a broken config ends FAILED, saying why.

These tests run first in a session (tests/conftest.py orders them), before the session's own
local cluster exists, and the block ends with `ray stop`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- local-cluster:begin -->\s*```bash\n(.*?)```\s*<!-- local-cluster:end -->", text, re.S)
    assert block, "README lost its local-cluster block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def _run(cmd: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["SHARED"] = str(tmp_path_factory.mktemp("shared"))
    yield env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_readme_local_cluster_runs_jobs_through_the_jobs_api(shell_env):
    commands = readme_commands()
    assert commands[-1] == "ray stop"
    outputs = {}
    for cmd in commands[:-1]:
        done = _run(cmd, shell_env)
        assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs[cmd.split(" --")[0]] = done.stdout + done.stderr

    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_nodes

    dashboard = "http://127.0.0.1:" + re.search(r"--dashboard-port=(\d+)", commands[0]).group(1)
    nodes = [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]
    assert len(nodes) == 3 and sum(n.is_head_node for n in nodes) == 1
    client = JobSubmissionClient(dashboard)
    jobs = [j for j in client.list_jobs() if j.entrypoint.startswith("python -m ray_jobs.")]
    assert sorted(j.entrypoint.split()[2] for j in jobs) == ["ray_jobs.prepare", "ray_jobs.pretrain"]
    assert all(str(j.status.value) == "SUCCEEDED" for j in jobs)

    shared = Path(shell_env["SHARED"])
    assert (shared / "prepared" / "manifest.json").is_file()
    assert (shared / "models" / "pretrained" / "config.json").is_file()
    assert list((shared / "runs").glob("*/checkpoint_*")) or list((shared / "runs").rglob("checkpoint_*"))
    prepare_log = next(v for k, v in outputs.items() if "submit prepare" in k)
    pretrain_log = next(v for k, v in outputs.items() if "submit pretrain" in k)
    assert "SUCCEEDED" in prepare_log and "kept" in prepare_log  # the job's own summary, streamed
    assert "model exported to" in pretrain_log and "SUCCEEDED" in pretrain_log

    # A broken config: the job fails at once, and its logs say what is wrong.
    broken = _run("interest submit pretrain --address " + dashboard + " -- --config ray_jobs/configs/pretrain_tiny.yaml"
                  " --set train.epochs=-2 --set data.prepared=$SHARED/prepared", shell_env)
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "FAILED" in broken.stderr and "train.epochs" in broken.stdout
    failed = [j for j in client.list_jobs() if str(j.status.value) == "FAILED"]
    assert len(failed) == 1 and "train.epochs" in client.get_job_logs(failed[0].submission_id)

    done = _run(commands[-1], shell_env)
    assert done.returncode == 0, done.stderr
