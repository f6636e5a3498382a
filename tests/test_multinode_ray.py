"""A real multi-node Ray cluster on this machine (a head without CPUs and a worker node, each its
own `ray start`), driven by the exact lines of README's "Try it on one machine" block: jobs go
through the Jobs API with `interest submit`, finish SUCCEEDED, stream their logs and leave their
outputs in the shared storage path; a job with a broken config ends FAILED, saying why.

These tests run first in a session (tests/conftest.py orders them), before the session's own
local cluster exists, and the block ends with `ray stop`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Nodes and jobs of the cluster, as JSON (run in the block's environment: token auth on).
STATE = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes
address = sys.argv[1]
client = JobSubmissionClient(address)
nodes = [{"head": n.is_head_node, "cpus": n.resources_total.get("CPU", 0)}
         for n in list_nodes(address=address, detail=True) if n.state == "ALIVE"]
jobs = [{"module": j.entrypoint.split()[2], "status": str(j.status.value), "logs": client.get_job_logs(j.submission_id)}
        for j in client.list_jobs() if j.entrypoint.startswith("python -m ray_jobs.")]
print(json.dumps({"nodes": nodes, "jobs": jobs}))
""".strip()


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
    env["INTEREST_TRACEBACK"] = "1"  # the nodes' environment: a failing job's log shows where
    yield env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_readme_local_cluster_runs_jobs_through_the_jobs_api(shell_env):
    commands = readme_commands()
    assert commands[-1] == "ray stop"
    script = "set -euo pipefail\n" + "\n".join(commands[:-1])
    done = _run(script, shell_env, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    shell_env["RAY_AUTH_MODE"] = "token"  # as the block exported it: clients send the token
    dashboard = "http://127.0.0.1:" + re.search(r"--dashboard-port=(\d+)", " ".join(commands)).group(1)
    state = json.loads(_run(f"python -c '{STATE}' {dashboard}", shell_env).stdout)
    assert len(state["nodes"]) == 2 and sum(n["head"] for n in state["nodes"]) == 1
    assert [n["cpus"] for n in state["nodes"] if n["head"]] == [0]  # the work ran on the worker node
    assert sorted((j["module"], j["status"]) for j in state["jobs"]) == [
        ("ray_jobs.prepare", "SUCCEEDED"), ("ray_jobs.pretrain", "SUCCEEDED")]

    shared = Path(shell_env["SHARED"])
    assert (shared / "prepared" / "manifest.json").is_file()
    assert (shared / "models" / "pretrained" / "config.json").is_file()
    assert list((shared / "runs").glob("*/checkpoint_*")) or list((shared / "runs").rglob("checkpoint_*"))
    # the jobs' own output, streamed: prepare's summary, pretrain's export line, both final states
    assert "manifest: " in log and "model exported to" in log and log.count(": SUCCEEDED") == 2

    # A broken config: the job fails at once, and its logs say what is wrong.
    broken = _run("interest submit pretrain --address " + dashboard + " -- --config ray_jobs/configs/pretrain_tiny.yaml"
                  " --set train.epochs=-2 --set data.prepared=$SHARED/prepared", shell_env)
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "FAILED" in broken.stderr and "train.epochs: Input should be greater than or equal to 1" in broken.stdout
    state = json.loads(_run(f"python -c '{STATE}' {dashboard}", shell_env).stdout)
    failed = [j for j in state["jobs"] if j["status"] == "FAILED"]
    assert len(failed) == 1 and "train.epochs" in failed[0]["logs"]

    done = _run(commands[-1], shell_env)
    assert done.returncode == 0, done.stderr
