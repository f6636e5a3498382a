"""What every job entry point shares: argument parsing, logging and connecting to Ray.

This is the only module that calls ``ray.init``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from typing import Sequence

from interest_model.config import ConfigError
from ray_jobs.console import CONSOLE, env_verbose

log = logging.getLogger("interest")


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", required=True, help="job config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set kcore.user_k=10 (repeatable)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else start a local cluster)")
    add_local_cluster_options(p)
    add_console_options(p)
    return p


def add_local_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster (default: all)")
    p.add_argument("--object-store-memory", type=parse_bytes, default=None, metavar="SIZE",
                   help="object store of a local cluster, e.g. 4G (default: Ray's, 30%% of memory); "
                        "what does not fit spills to disk")


def parse_bytes(text: str) -> int:
    """'4G', '512M', '1.5GiB' or a plain number of bytes -> bytes."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M, or bytes)") from None
    if value < 78 * 2**20:  # Ray's own floor for an object store
        raise argparse.ArgumentTypeError(f"{text!r}: an object store needs at least 78M")
    return int(value)


def add_console_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO", help="level of the run's log file (and of --verbose)")
    p.add_argument("--verbose", action="store_true",
                   help="everything on the console too: Ray's and the libraries' logs (also INTEREST_VERBOSE=1)")


def setup_logging(level: str = "INFO") -> None:
    """Plain logging to stderr, for scripts that are not jobs (the benchmarks)."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def output_dir_of(cfg) -> str | None:
    """The folder a job's log files go under: its ``out_dir``, else the folder that holds what
    it writes (prepared data and exported models stay as they are: the logs sit next to them)."""
    value = getattr(cfg, "out_dir", None)
    if isinstance(value, str) and value:
        return value
    for field in ("output_dir", "export_dir"):
        value = getattr(cfg, field, None)
        if isinstance(value, str) and value:
            return os.path.dirname(value.rstrip("/")) or "."
    return None


@contextlib.contextmanager
def console_session(name: str, out_dir: str | None, args):
    """The run's console session (``ray_jobs/console.py``); an exception that ends the run is
    written with its traceback to the log file and carries the file's path."""
    with CONSOLE.session(name, out_dir, verbose=args.verbose or env_verbose(), level=args.log_level):
        try:
            yield
        except BaseException as exc:
            logging.getLogger("interest").error("%s failed", name, exc_info=True)
            with contextlib.suppress(Exception):
                exc.log_path = str(CONSOLE.log_path)
            raise


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Connect to a cluster (``address`` or $RAY_ADDRESS) or start a local one (``num_cpus``,
    ``object_store_memory``: its size); reuse a connection that is already open (tests share one
    cluster per session)."""
    import ray

    if ray.is_initialized():
        return
    # Per-epoch log lines differ only in numbers; Ray's dedup would fold them into one.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Quiet console: Ray's own logs go to the run's log file with the rest (see console.py).
    kwargs: dict = {"log_to_driver": True}
    if address is None:
        # The dashboard serves the State API that Ray Train's placement-group cleanup (and Tune)
        # rely on; without it they log errors and can leak placement groups.
        kwargs.update(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=True,
                      dashboard_host="127.0.0.1")
    ray.init(address=address, **kwargs)
    log.info("ray: connected (%s), resources %s", address or "local", ray.cluster_resources())


def data_context() -> None:
    """Ray Data settings for this project's data, set on the driver before a Dataset is made (it
    keeps the context it was made in); a variable of Ray's own, when set, still decides.

    - Shuffles are small (prepare's group_map over a few buckets of users, a user's histories
      gathered across scenarios): a sort-based shuffle of plain tasks, not the default that first
      starts aggregator actors, which cost more than they save (docs/testing.md).
    - Prepared data are a few Parquet files: the file-based reader, not the default one that
      starts a pool of footer-reading actors for every read (seconds per job on 2 cores)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    if not os.environ.get("RAY_DATA_DEFAULT_SHUFFLE_STRATEGY"):
        ctx.shuffle_strategy = "sort_shuffle_pull_based"
    if not os.environ.get("RAY_DATA_USE_DATASOURCE_V2"):
        ctx.use_datasource_v2 = False


_WORKING_DIRECTORY: list[str] = []  # the directory keep_working_directory re-enters


def keep_working_directory() -> None:
    """A job submitted with a working_dir runs in Ray's copy of it, which was seen replaced under
    a running driver when two consecutive jobs shipped the same package (docs/cluster.md's multi-node
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


@contextlib.contextmanager
def job_session(argv: Sequence[str] | None, prog: str, description: str, config_cls, check=None):
    """A job's run: parse its arguments, load and validate its config (before any work), open
    its console session (log file under the job's output folder), run ``check(cfg)`` (input
    errors a job can find alone, before the cluster), connect to Ray. Yields the config."""
    args = job_parser(prog, description).parse_args(argv)
    keep_working_directory()
    # transformers resolves Path("src") against the working directory when first imported: import
    # it while the directory is certainly there (see keep_working_directory).
    import transformers  # noqa: F401
    cfg = config_cls.load(args.config, args.overrides)
    with console_session(prog.split()[-1], output_dir_of(cfg), args):
        if check is not None:
            check(cfg)
        init_ray(args.address, args.num_cpus, args.object_store_memory)
        yield cfg


def run_main(fn, argv: Sequence[str] | None) -> int:
    """Run a job's main body. Every error ends the process with one clear line (and the run's
    log file, which holds the traceback): config and input errors exit 2, others 1;
    INTEREST_TRACEBACK=1 prints the traceback too."""
    try:
        return fn(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        # Raised inside a Ray task, the error arrives wrapped with the task's traceback in its
        # text: print the original message, one line.
        cause = getattr(exc, "cause", None)
        if os.environ.get("INTEREST_TRACEBACK", "0") not in ("0", ""):  # for a bug report
            traceback.print_exc()
        known = isinstance(exc, (ConfigError, FileNotFoundError, ValueError))
        message = cause if isinstance(cause, Exception) else exc
        print(f"error: {message if known else f'{type(exc).__name__}: {message}'}", file=sys.stderr)
        if getattr(exc, "log_path", None):
            print(f"log: {exc.log_path}", file=sys.stderr)
        return 2 if known else 1
