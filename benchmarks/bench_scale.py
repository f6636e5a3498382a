"""How each stage's cost grows with the data: wall time and the machine's peak used memory of
every stage at every size of a synthetic platform (`interest data generate`), each stage a fresh
process (the Ray jobs with a local cluster of their own), the cost per event and the ratio to
linear growth from the smallest size. Prints the table and writes JSON, Markdown and a log-log
PNG.

    python benchmarks/bench_scale.py --sizes 1000000 5000000 20000000 \\
        --stages generate prepare prepare-pandas --out outputs/bench/scale

Stages: ``generate`` (the data itself; generated once per size under --data-dir and reused),
``prepare`` (`interest prepare` on Ray Data), ``prepare-pandas`` (the same pipeline in one
process: the reference engine, where it fits; --pandas-max-events), ``prepare-fault`` (the Ray
job again, with one Ray worker SIGKILLed while it validates a block: a fault drill). Where two of
them run, their outputs must match (the manifest's counts and every table's rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import PREPARE_COUNTS as COUNTS, REPO, PeakMemory

PANDAS = ("import sys; from interest_model.data.config import PrepareConfig; "
          "from interest_model.data.engine import PandasEngine; from interest_model.data.pipeline import run_prepare; "
          "run_prepare(PrepareConfig.load(sys.argv[1], ['output_dir=' + sys.argv[2]]), PandasEngine())")


def run(cmd: list[str], log: Path, timeout: float) -> dict:
    """Run ``cmd`` in a fresh process: its wall time, the machine's peak used memory above its
    level at the start, its exit status (output to ``log``)."""
    with open(log, "w") as out, PeakMemory() as mem:
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "peak_mib": round(mem.peak), "rc": rc}


def kill_a_validating_worker(stop: threading.Event, killed: list[int], after_s: float = 1.0) -> None:
    """Watch the machine's processes; SIGKILL the first Ray worker seen running the validate
    task ``after_s`` seconds after it is seen (mid-task), once."""
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::") and b"validate_block" in cmd:
                time.sleep(after_s)
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    break  # its task ended first: look again
                killed.append(int(proc.name))
                return
        stop.wait(0.2)


def dataset(data_dir: Path, events: int, timeout: float) -> tuple[Path, dict | None]:
    """The generated data of this size (generated now unless a previous run left it complete)."""
    folder = data_dir / f"scale-{events}"
    if (folder / "generated.json").exists():
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    row = run([sys.executable, "-m", "ray_jobs.cli", "data", "generate", "--events", str(events), "--out", str(folder)],
              folder.parent / f"generate-{events}.log", timeout)
    if row["rc"] != 0:
        raise RuntimeError(f"generate {events}: exit {row['rc']} (see {folder.parent}/generate-{events}.log)")
    return folder, row


def same_output(a: Path, b: Path) -> bool:
    """Both engines' prepared data: the same counts and the same rows in every table."""
    import pyarrow.parquet as pq

    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    if any(ma[k] != mb[k] for k in COUNTS):
        return False
    for table in ("sequences", "splits", "items"):
        fa, fb = (pq.read_table(p / table).to_pandas() for p in (a, b))
        keys = [c for c in ("scenario", "user_id", "scheme", "split", "item_id") if c in fa.columns]
        fa, fb = (f.sort_values(keys).reset_index(drop=True).astype(str) for f in (fa, fb))
        if not fa.equals(fb[fa.columns]):
            return False
    return True


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage and r["rc"] == 0]
        if not mine:
            continue
        x = [r["events"] for r in mine]
        ax1.plot(x, [r["wall_s"] for r in mine], "o-", label=stage)
        ax2.plot(x, [r["peak_mib"] / 1024 for r in mine], "o-", label=stage)
    if rows:
        lo = min(r["events"] for r in rows)
        hi = max(r["events"] for r in rows)
        first = min((r for r in rows if r["rc"] == 0), key=lambda r: r["events"], default=None)
        if first is not None:
            ax1.plot([lo, hi], [first["wall_s"], first["wall_s"] * hi / lo], ":", color="grey", label="linear")
    for ax, title in ((ax1, "wall time (s)"), (ax2, "peak used memory (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(rows: list[dict]) -> str:
    out = ["| stage | events | wall s | peak GiB | µs per event | events/s | vs linear |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["rc"] != 0:
            out.append(f"| {r['stage']} | {r['events']:,} | {'out of time' if r['rc'] == 124 else 'exit ' + str(r['rc'])} "
                       f"| {r['peak_mib'] / 1024:.1f} | | | |")
            continue
        out.append(f"| {r['stage']} | {r['events']:,} | {r['wall_s']:.1f} | {r['peak_mib'] / 1024:.1f} | "
                   f"{r['us_per_event']:.1f} | {r['events'] / r['wall_s']:,.0f} | {r['vs_linear']:.2f}x |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    p.add_argument("--stages", nargs="+", default=["generate", "prepare", "prepare-pandas"],
                   choices=["generate", "prepare", "prepare-pandas", "prepare-fault"])
    p.add_argument("--data-dir", default="data/scale")
    p.add_argument("--out", default="outputs/bench/scale")
    p.add_argument("--pandas-max-events", type=int, default=5_000_000, help="the one-process engine up to this size")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    p.add_argument("--keep", action="store_true", help="keep the prepared outputs")
    p.add_argument("--object-store-memory", default=None, metavar="SIZE",
                   help="the Ray jobs' local object store, e.g. 3G (default: Ray's, 30%% of memory); beyond it Ray "
                        "spills to disk")
    args = p.parse_args()
    out, data_dir = Path(args.out).resolve(), Path(args.data_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def record(stage: str, events: int, row: dict) -> None:
        row = {"stage": stage, "events": events, **row}
        row["us_per_event"] = row["wall_s"] / events * 1e6
        base = next((r for r in rows if r["stage"] == stage and r["rc"] == 0), None)
        row["vs_linear"] = row["us_per_event"] / base["us_per_event"] if base and row["rc"] == 0 else 1.0
        rows.append(row)
        print(f"{stage:<15}{events:>12,}  {row['wall_s']:>8.1f} s  {row['peak_mib'] / 1024:>5.1f} GiB  "
              f"{'ok' if row['rc'] == 0 else 'exit ' + str(row['rc'])}", flush=True)
        (out / "scale.json").write_text(json.dumps({"rows": rows}, indent=1))

    for events in sorted(args.sizes):
        folder, generated = dataset(data_dir, events, args.timeout)
        if generated is not None and "generate" in args.stages:
            record("generate", events, generated)
        prepared = {}
        for stage in [s for s in args.stages if s.startswith("prepare")]:
            if stage == "prepare-pandas" and events > args.pandas_max_events:
                continue
            target = out / f"prepared-{stage}-{events}"
            shutil.rmtree(target, ignore_errors=True)
            store = ["--object-store-memory", args.object_store_memory] if args.object_store_memory else []
            cmd = ([sys.executable, "-c", PANDAS, str(folder / "prepare.yaml"), str(target)] if stage == "prepare-pandas"
                   else [sys.executable, "-m", "ray_jobs.cli", "prepare", "--config", str(folder / "prepare.yaml"),
                         "--set", f"output_dir={target}", *store])
            stop, killed = threading.Event(), []
            watcher = threading.Thread(target=kill_a_validating_worker, args=(stop, killed), daemon=True)
            if stage == "prepare-fault":
                watcher.start()
            row = run(cmd, out / f"{stage}-{events}.log", args.timeout)
            stop.set()
            if stage == "prepare-fault":
                watcher.join()
                row["killed_worker"] = killed[0] if killed else None
                print(f"  worker killed mid-validation: {bool(killed)}", flush=True)
            if row["rc"] == 0:
                prepared[stage] = target
            record(stage, events, row)
            if stage != "prepare" and "prepare" in prepared and stage in prepared:
                rows[-1]["same_output"] = same_output(prepared["prepare"], target)
                print(f"  the same output as the undisturbed Ray job: {rows[-1]['same_output']}", flush=True)
        if not args.keep:
            for target in prepared.values():
                shutil.rmtree(target, ignore_errors=True)

    md = table(rows)
    print("\n" + md)
    (out / "scale.md").write_text(md + "\n")
    (out / "scale.json").write_text(json.dumps({"rows": rows}, indent=1))
    plot(rows, out / "scale.png")
    print(f"\n{out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'}")
    faults = [r for r in rows if r["stage"] == "prepare-fault"]
    return 0 if all(r["rc"] == 0 and r.get("same_output", True) for r in rows) and \
        all(r.get("killed_worker") for r in faults) else 1


if __name__ == "__main__":
    raise SystemExit(main())
