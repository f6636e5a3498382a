"""The console of every ``interest`` command: quiet by default, everything in a log file.

A job's run opens a session (``session``): from then on Ray's, Ray Data's and the libraries'
output (Python logging, warnings, worker logs forwarded to the driver, and when the process
owns its terminal, anything written to file descriptors 1 and 2) goes to a log file per run,
``<the job's output folder>/logs/<job>-<time>.log``, whose path is printed. The console gets
one line at each stage's start and end with its time, a progress bar for long stages, the
summary tables, and errors (one line, and the log's path). ``--verbose`` or
``INTEREST_VERBOSE=1`` leaves every stream on the console (the log file then gets the Python
logging records only).

Outside a session (the library used from Python, the tests) ``out`` prints and bars are off.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

VERBOSE_ENV = "INTEREST_VERBOSE"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def env_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0").lower() not in ("0", "", "false", "no")


def log_path_for(job: str, out_dir: str | None) -> Path:
    """``<out_dir>/logs/<job>-<YYYYmmdd-HHMMSS>.log``; a remote or missing ``out_dir``:
    ``outputs/logs`` (``INTEREST_LOG_DIR`` wins over both)."""
    base = os.environ.get("INTEREST_LOG_DIR")
    if not base:
        local = out_dir and "://" not in out_dir and not out_dir.startswith("file:")
        base = os.path.join(out_dir, "logs") if local else os.path.join("outputs", "logs")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{job}-{stamp}.log"
    n = 1
    while path.exists():  # two runs in the same second
        n += 1
        path = Path(base) / f"{job}-{stamp}-{n}.log"
    return path


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class Console:
    """Where a job's user-facing output goes (one per process: ``CONSOLE``)."""

    def __init__(self) -> None:
        self.active = False  # a quiet session is open
        self.verbose = True
        self.log_path: Path | None = None
        self._out = None  # the console's stdout and stderr while a session is open
        self._err = None
        self._undo: list = []
        self._depth = 0  # stages open

    def __reduce__(self):
        """Pickled (a function Ray ships by value that names it), it is the receiving process's
        own console, never this one's open streams."""
        return (_the_console, ())

    # -- what jobs write -----------------------------------------------------------------------

    @property
    def stream(self):
        return self._out if self._out is not None else sys.stdout

    def out(self, *parts, end: str = "\n") -> None:
        """A line for the user (tables, paths, answers); also in the log file of a quiet session."""
        text = " ".join(str(p) for p in parts)
        print(text, end=end, file=self.stream, flush=True)
        if self.active:
            logging.getLogger("interest.console").info("%s", text)

    def error(self, message: str, label: str = "error") -> None:
        """One loud line on stderr, and where the whole story is."""
        stream = self._err if self._err is not None else sys.stderr
        print(f"{label}: {message}", file=stream, flush=True)
        if self.log_path is not None:
            print(f"log: {self.log_path}", file=stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str):
        """``name ...`` at the start, ``name: done in 12.3 s`` at the end (``failed after`` on
        an exception, which propagates); what the body puts in the yielded ``note`` list ends
        the last line. On the console in a session, for the outermost stage only (a benchmark's
        stage, not the training inside it); the log file gets every stage."""
        log = logging.getLogger("interest.stage")
        t0, note = time.perf_counter(), []
        self._depth += 1
        shown = self.active and self._depth == 1

        def say(line: str) -> None:
            log.info("%s", line)
            if shown:
                print(line, file=self.stream, flush=True)

        say(f"{name} ...")
        try:
            yield note
        except BaseException:
            say(f"{name}: failed after {_elapsed(time.perf_counter() - t0)}")
            raise
        else:
            say(f"{name}: done in {_elapsed(time.perf_counter() - t0)}" + "".join(f"; {n}" for n in note))
        finally:
            self._depth -= 1

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0):
        """A progress bar on the console in a quiet session on a terminal (cleared when done),
        else one that draws nothing (a pipe or a CI log gets the stage lines only). Used as a
        context manager; ``update(n)``, ``set_postfix_str(s)``."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True,
                    disable=not self.bars, mininterval=0.5, initial=initial)

    @property
    def bars(self) -> bool:
        """Progress bars are drawn: a quiet session on a terminal."""
        return self.active and hasattr(self.stream, "isatty") and self.stream.isatty()

    # -- the session -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, job: str, out_dir: str | None, verbose: bool = False, level: str = "INFO"):
        """Open the run's log file and, unless ``verbose``, move everything but the console's
        own lines into it. Restores the process's streams on exit."""
        if self.log_path is not None:  # nested (a job that runs other jobs): one session
            yield self
            return
        path = log_path_for(job, out_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
        self.log_path, self.verbose = path, verbose
        try:
            self._open(logfile, verbose, level)
            if not verbose:
                self.out(f"log: {path}")
            yield self
        finally:
            self._close()
            logfile.close()

    def _open(self, logfile, verbose: bool, level: str) -> None:
        root = logging.getLogger()
        handler = logging.StreamHandler(logfile)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(getattr(logging, level.upper(), logging.INFO))
        self._undo.append(lambda: (root.removeHandler(handler), root.setLevel(old_level)))
        if verbose:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(console)
            self._undo.append(lambda: root.removeHandler(console))
            return
        self.active = True
        old_out, old_err = sys.stdout, sys.stderr
        for s in (old_out, old_err):
            with contextlib.suppress(Exception):
                s.flush()
        if old_out is sys.__stdout__ and old_err is sys.__stderr__ and _has_fd(old_out) and _has_fd(old_err):
            # The process owns its streams: move file descriptors 1 and 2 into the log, so that
            # what C extensions and subprocesses write goes there too.
            saved = os.dup(1), os.dup(2)
            self._out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
            self._err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
            os.dup2(logfile.fileno(), 1)
            os.dup2(logfile.fileno(), 2)

            def restore() -> None:
                # This process is a command about to end: disconnect from Ray here, so that the
                # worker logs Ray still forwards land in the log file, not on the console.
                ray = sys.modules.get("ray")
                if ray is not None and ray.is_initialized():
                    with contextlib.suppress(Exception):
                        ray.shutdown()
                for s in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        s.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                for s in (self._out, self._err):
                    with contextlib.suppress(Exception):
                        s.close()
            self._undo.append(restore)
        else:
            # Someone else owns the streams (pytest's capture, a notebook): swap the objects.
            self._out, self._err = old_out, old_err
            sys.stdout = sys.stderr = logfile

            def restore_objects() -> None:
                sys.stdout, sys.stderr = old_out, old_err
            self._undo.append(restore_objects)
        # Handlers made before the session (Ray's own, at import) write to the old streams.
        for logger in [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]:
            for h in list(getattr(logger, "handlers", [])):
                if type(h) is logging.StreamHandler and h.stream in (old_out, old_err):
                    self._undo.append(lambda h=h, s=h.stream: h.setStream(s))
                    h.setStream(logfile)
        logging.captureWarnings(True)
        self._undo.append(lambda: logging.captureWarnings(False))
        _quiet_ray_data()

    def _close(self) -> None:
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()
        self.active, self.verbose, self.log_path = False, True, None
        self._out = self._err = None


def _has_fd(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError, _io.UnsupportedOperation):
        return False


def _quiet_ray_data() -> None:
    """Ray Data's progress bars redraw for every operator; the console has its own."""
    with contextlib.suppress(Exception):
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False


CONSOLE = Console()


def _the_console() -> Console:
    return CONSOLE


class TrainingProgress:
    """A training run's bar on the driver, fed by rank 0 of the run through a small Ray actor
    (``handle``: None when the console draws no bars, and the workers then report nothing)."""

    def __init__(self, name: str, total_steps: int, epochs: int):
        self.name, self.total, self.epochs = name, total_steps, epochs
        self.handle = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TrainingProgress":
        """Create the actor the run's rank 0 reports to (when the console draws bars)."""
        if CONSOLE.bars:
            import ray

            self.handle = ray.remote(num_cpus=0)(_Board).remote()
        return self

    def __enter__(self) -> "TrainingProgress":
        if self.handle is not None:
            self._thread = threading.Thread(target=self._draw, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.handle is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.kill(self.handle)

    def _draw(self) -> None:
        import ray

        with CONSOLE.bar(self.total, self.name, unit="step") as bar:
            while not self._stop.wait(0.5):
                try:
                    state = ray.get(self.handle.read.remote(), timeout=5)
                except Exception:  # the run is ending; the bar is only a view
                    continue
                if state.get("step") is not None:
                    bar.update(max(0, state["step"] - bar.n))
                bar.set_postfix_str(_postfix(state, self.epochs), refresh=False)


def _postfix(state: dict, epochs: int) -> str:
    parts = []
    if state.get("epoch") is not None:
        parts.append(f"epoch {state['epoch'] + 1}/{epochs}")
    if state.get("loss") is not None:
        parts.append(f"loss {state['loss']:.3f}")
    if state.get("val") is not None:
        parts.append(f"val NDCG@10 {state['val']:.4f} (best {state['best']:.4f})")
    return ", ".join(parts)


class _Board:
    """Holds the latest progress of one run (a Ray actor; rank 0 writes, the driver reads)."""

    def __init__(self) -> None:
        self.state: dict = {}

    def update(self, state: dict) -> None:
        self.state.update(state)

    def read(self) -> dict:
        return self.state
