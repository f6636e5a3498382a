"""A real multi-node Ray cluster on this machine (a head without CPUs and two worker nodes of one
CPU each, each its own `ray start`), driven by the exact lines of the "Try it on one machine"
block of docs/cluster.md: jobs go through the Jobs API with `interest submit`, finish SUCCEEDED,
stream their logs and leave their outputs in the shared storage path (prepare, pretrain with a
training worker on each node, then predict with the model it made); the work runs on both nodes
and the prepared data is the one-process engine's; a job with a broken config ends FAILED,
saying why.

The block starts with the session and runs while the tests without Ray do; this test waits for
it, before the session's own local cluster exists (tests/conftest.py orders them), and the block
ends with `ray stop`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from interest_model.data.config import PrepareConfig
from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare
from tests.test_prepare_ray import _same_outputs as same_outputs

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Nodes and jobs of the cluster, as JSON (run in the block's environment: token auth on).
STATE = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes, list_tasks
address = sys.argv[1]
client = JobSubmissionClient(address)
alive = [n for n in list_nodes(address=address, detail=True) if n.state == "ALIVE"]
tasks = [t.node_id for t in list_tasks(address=address, limit=10_000, raise_on_missing_output=False)
         if t.type == "NORMAL_TASK" and t.state == "FINISHED"]
workers = [a.node_id for a in list_actors(address=address, limit=10_000, raise_on_missing_output=False)
           if a.class_name == "RayTrainWorker"]
nodes = [{"head": n.is_head_node, "cpus": n.resources_total.get("CPU", 0), "tasks": tasks.count(n.node_id),
          "train_workers": workers.count(n.node_id)} for n in alive]
jobs = [{"module": j.entrypoint.split()[2], "status": str(j.status.value), "logs": client.get_job_logs(j.submission_id)}
        for j in client.list_jobs() if j.entrypoint.startswith("python -m ray_jobs.")]
print(json.dumps({"nodes": nodes, "jobs": jobs}))
""".strip()


def block_commands() -> list[str]:
    text = (REPO / "docs" / "cluster.md").read_text()
    block = re.search(r"<!-- local-cluster:begin -->\s*```bash\n(.*?)```\s*<!-- local-cluster:end -->", text, re.S)
    assert block, "docs/cluster.md lost its local-cluster block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def _run(cmd: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def block_env(shared: Path) -> dict:
    """The block's shell: this venv's commands, a fresh shared folder, never an outside cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["SHARED"] = str(shared)
    env["INTEREST_TRACEBACK"] = "1"  # the nodes' environment: a failing job's log shows where
    return env


class Block:
    """The docs' block but its last line (`ray stop`), running in the background: started when
    the session starts (tests/conftest.py), while the tests that need no Ray run; the test below
    waits for it. Its output goes to a file (a pipe nobody reads would stall it)."""

    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="interest-block-"))
        (self.work / "shared").mkdir()
        self.env = block_env(self.work / "shared")
        self.log = self.work / "block.log"
        self.stopped = False
        script = "set -euo pipefail\n" + "\n".join(block_commands()[:-1])
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.log.read_text()

    def stop(self) -> None:
        """`ray stop` (the block's last line, or after a failure), then the files; once."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120, env=self.env)
        shutil.rmtree(self.work, ignore_errors=True)


def test_the_docs_local_cluster_runs_jobs_through_the_jobs_api(multinode_block):
    block = multinode_block
    commands = block_commands()
    assert commands[-1] == "ray stop"
    code, log = block.wait(timeout=900)
    assert code == 0, log[-5000:]
    shell_env = block.env
    shell_env["RAY_AUTH_MODE"] = "token"  # as the block exported it: clients send the token
    dashboard = "http://127.0.0.1:" + re.search(r"--dashboard-port=(\d+)", " ".join(commands)).group(1)
    state = json.loads(_run(f"python -c '{STATE}' {dashboard}", shell_env).stdout)
    assert len(state["nodes"]) == 3 and sum(n["head"] for n in state["nodes"]) == 1
    assert [n["cpus"] for n in state["nodes"] if n["head"]] == [0]  # the work ran on the worker nodes
    # on both: Ray Data's tasks (the prepare and predict jobs) and one training worker each
    workers = [n for n in state["nodes"] if not n["head"]]
    assert all(n["tasks"] > 0 for n in workers), state["nodes"]
    assert [n["train_workers"] for n in workers] == [1, 1], state["nodes"]
    assert sorted((j["module"], j["status"]) for j in state["jobs"]) == [
        ("ray_jobs.predict", "SUCCEEDED"), ("ray_jobs.prepare", "SUCCEEDED"), ("ray_jobs.pretrain", "SUCCEEDED")]

    shared = Path(shell_env["SHARED"])
    assert (shared / "prepared" / "manifest.json").is_file()
    # prepared on two nodes, the same tables as the one-process engine makes of the same files
    reference = block.work / "reference"
    run_prepare(PrepareConfig.load(REPO / "ray_jobs/configs/tiny.yaml",
                                   [f"input.root={shared / 'raw'}", f"output_dir={reference}"]), PandasEngine())
    same_outputs(shared / "prepared", reference)
    assert (shared / "models" / "pretrained" / "config.json").is_file()
    assert list((shared / "runs").glob("*/checkpoint_*")) or list((shared / "runs").rglob("checkpoint_*"))
    # every user's predictions, written by actors on the worker nodes into the shared folder
    predicted = json.loads((shared / "predictions" / "manifest.json").read_text())
    assert predicted["rows"] > 0 and predicted["errors"] == 0
    assert all((shared / "predictions" / f).is_file() for f in predicted["files"])
    # the jobs' own output, streamed: prepare's summary, pretrain's export line, the final states
    assert "manifest: " in log and "model exported to" in log and log.count(": SUCCEEDED") == 3

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
