"""``interest submit``: run a job on a Ray cluster through the Jobs API, with this checkout as its
working directory and cluster/runtime_env.yaml as its environment, and stream its logs.

    interest submit prepare --address http://HEAD:8265 -- --config ray_jobs/configs/demo.yaml \\
        --set input.root=s3://bucket/raw --set output_dir=s3://bucket/prepared/demo
    interest submit pretrain -- --config ray_jobs/configs/pretrain_demo.yaml --set data.prepared=...
    interest submit tune --no-wait -- --config ray_jobs/configs/tune_demo.yaml

The same as ``ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m
ray_jobs.<job> ARGS``. Exit status: 0 when the job SUCCEEDED, 1 when it FAILED or was STOPPED,
130 when interrupted here (the job is stopped first). With token authentication on, the client
reads the token as Ray does ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from interest_model import io
from ray_jobs.common import run_main

REPO = Path(__file__).resolve().parent.parent
JOBS = ("prepare", "pretrain", "transfer", "evaluate", "benchmark", "tune", "predict", "serve")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interest submit", description=__doc__.splitlines()[0])
    p.add_argument("job", choices=JOBS)
    p.add_argument("--address", default=None,
                   help="the cluster's dashboard, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
                        "$RAY_ADDRESS, else http://127.0.0.1:8265)")
    p.add_argument("--runtime-env", default=str(REPO / "cluster" / "runtime_env.yaml"))
    p.add_argument("--working-dir", default=None, help="code to ship (default: the runtime env's, relative to it)")
    p.add_argument("--submission-id", default=None)
    p.add_argument("--entrypoint-num-cpus", type=float, default=None)
    p.add_argument("--entrypoint-num-gpus", type=float, default=None)
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    return p


def runtime_env(path: str, working_dir: str | None) -> dict:
    """The runtime env YAML with its working_dir made absolute (relative to the current directory,
    as `ray job submit --working-dir` reads it)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"runtime env file not found: {path}")
    env = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(env, dict):
        raise ValueError(f"{path}: a runtime env must be a mapping")
    wd = working_dir or env.get("working_dir")
    if wd and not io.is_remote(wd):
        resolved = Path(wd).resolve()
        if not resolved.is_dir():
            raise FileNotFoundError(f"working_dir {wd} is not a directory")
        env["working_dir"] = str(resolved)
    return env


def entrypoint(job: str, args: list[str]) -> str:
    return shlex.join(["python", "-m", f"ray_jobs.{job}", *args])


def dashboard_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto" or not address.startswith(("http://", "https://")):
        # A GCS address (host:6379) is not the Jobs API; the dashboard of a local head is.
        return "http://127.0.0.1:8265" if not address or address == "auto" else f"http://{address.split(':')[0]}:8265"
    return address


def submit(client, job: str, args: list[str], env: dict, submission_id: str | None = None,
           num_cpus: float | None = None, num_gpus: float | None = None) -> str:
    kwargs = {k: v for k, v in (("entrypoint_num_cpus", num_cpus), ("entrypoint_num_gpus", num_gpus)) if v}
    return client.submit_job(entrypoint=entrypoint(job, args), runtime_env=env, submission_id=submission_id, **kwargs)


def follow(client, submission_id: str, out=sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status."""

    async def tail():
        async for chunk in client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    while True:  # the log stream closes when the job ends; its status follows shortly
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL:
            return status
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    from ray.job_submission import JobSubmissionClient

    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)  # ours before "--", the job's after
    args = parser().parse_args(argv[:split])
    args.args = argv[split + 1:]
    env = runtime_env(args.runtime_env, args.working_dir)
    address = dashboard_address(args.address)
    try:
        client = JobSubmissionClient(address)
    except ConnectionError as exc:
        print(f"error: cannot reach the Jobs API at {address} ({exc}); is the cluster's dashboard up?", file=sys.stderr)
        return 2
    sid = submit(client, args.job, args.args, env, args.submission_id, args.entrypoint_num_cpus,
                 args.entrypoint_num_gpus)
    print(f"submitted {args.job} to {address} as {sid}", file=sys.stderr, flush=True)
    if args.no_wait:
        print(sid)
        return 0
    try:
        status = follow(client, sid)
    except KeyboardInterrupt:
        client.stop_job(sid)
        print(f"\ninterrupted: stopped job {sid}", file=sys.stderr)
        return 130
    info = client.get_job_info(sid)
    print(f"job {sid}: {status}" + (f" ({info.message})" if status != "SUCCEEDED" and info.message else ""),
          file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
