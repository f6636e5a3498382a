"""What every job entry point shares: argument parsing, logging and connecting to Ray.

This is the only module that calls ``ray.init``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Sequence

from interest_model.config import ConfigError

log = logging.getLogger("interest")


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", required=True, help="job config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set kcore.user_k=10 (repeatable)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else start a local cluster)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster (default: all)")
    p.add_argument("--log-level", default="INFO")
    return p


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address`` or $RAY_ADDRESS) or start a local one; reuse a
    connection that is already open (tests share one cluster per session)."""
    import ray

    if ray.is_initialized():
        return
    # Per-epoch log lines differ only in numbers; Ray's dedup would fold them into one.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"log_to_driver": True}
    if address is None:
        # The dashboard serves the State API that Ray Train's placement-group cleanup (and Tune)
        # rely on; without it they log errors and can leak placement groups.
        kwargs.update(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1")
    ray.init(address=address, **kwargs)
    log.info("ray: connected (%s), resources %s", address or "local", ray.cluster_resources())


_WORKING_DIRECTORY: list[str] = []  # the directory keep_working_directory re-enters


def keep_working_directory() -> None:
    """A job submitted with a working_dir runs in Ray's copy of it, which was seen replaced under
    a running driver when two consecutive jobs shipped the same package (the README's multi-node
    block): the path is there again, the driver's current directory is the removed one, and any
    later ``os.getcwd()`` (torch._dynamo's import, pathlib's resolve) fails with
    FileNotFoundError. From here on such a call re-enters the current directory by its path."""
    _WORKING_DIRECTORY[:] = [os.getcwd()]
    if getattr(os.getcwd, "_interest_guard", False):
        return
    original = os.getcwd

    def getcwd() -> str:
        try:
            return original()
        except FileNotFoundError:
            if not _WORKING_DIRECTORY or not os.path.isdir(_WORKING_DIRECTORY[0]):
                raise
            os.chdir(_WORKING_DIRECTORY[0])
            return original()

    getcwd._interest_guard = True  # type: ignore[attr-defined]
    os.getcwd = getcwd


def start_job(argv: Sequence[str] | None, prog: str, description: str, config_cls, check=None):
    """Parse the job's arguments, set up logging, load and validate its config (before any
    work), run ``check(cfg)`` (input errors a job can find alone, before the cluster), connect to
    Ray. Returns the config."""
    args = job_parser(prog, description).parse_args(argv)
    setup_logging(args.log_level)
    keep_working_directory()
    # transformers resolves Path("src") against the working directory when first imported: import
    # it while the directory is certainly there (see keep_working_directory).
    import transformers  # noqa: F401
    cfg = config_cls.load(args.config, args.overrides)
    if check is not None:
        check(cfg)
    init_ray(args.address, args.num_cpus)
    return cfg


def run_main(fn, argv: Sequence[str] | None) -> int:
    """Run a job's main body; config and input errors end the process with a clear message."""
    try:
        return fn(argv)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # Raised inside a Ray task, the error arrives wrapped with the task's traceback in its
        # text: print the original message, one line.
        cause = getattr(exc, "cause", None)
        if os.environ.get("INTEREST_TRACEBACK", "0") not in ("0", ""):  # for a bug report
            traceback.print_exc()
        print(f"error: {cause if isinstance(cause, Exception) else exc}", file=sys.stderr)
        return 2
