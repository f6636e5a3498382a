"""The ``two-nodes`` stage of bench_scale.py: the same prepare and one training epoch on a cluster
of two worker nodes and on one node, on this machine.

Each layout is a real multi-node Ray cluster (a head without CPUs and its worker nodes, each a
`ray start` of its own, token authentication on, as in docs/cluster.md's local block): two
worker nodes of one CPU each, then one worker node of two CPUs, with the same object store in
all. On each, `interest prepare` over the generated events (the driver connected with
``--address``), then `interest pretrain` for one epoch with two training workers on the
prepared sources. Recorded: wall times, the nodes the prepare tasks and the training workers
ran on (Ray's state API), whether the two layouts prepare the same output (every table), and
the trained models' validation NDCG@10 side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO, PeakMemory

BIN = Path(sys.executable).parent
HEAD_PORT, DASHBOARD_PORT, AGENT_PORT = 6390, 8266, 52400

# The tasks and actors of the cluster's jobs, by node (run against the cluster's dashboard).
NODES_USED = """
import json, sys
from collections import Counter
from ray.util.state import list_actors, list_nodes, list_tasks
address = sys.argv[1]
workers = sorted((n for n in list_nodes(address=address) if not n.is_head_node), key=lambda n: n.node_id)
nodes = {**{n.node_id: f"node {i}" for i, n in enumerate(workers, start=1)},
         **{n.node_id: "head" for n in list_nodes(address=address) if n.is_head_node}}
tasks = Counter(nodes.get(t.node_id, "?") for t in list_tasks(address=address, limit=10_000, raise_on_missing_output=False)
                if t.type == "NORMAL_TASK" and t.state == "FINISHED")
workers = Counter(nodes.get(a.node_id, "?") for a in list_actors(address=address, limit=10_000, raise_on_missing_output=False)
                  if a.class_name == "RayTrainWorker")
print(json.dumps({"tasks": dict(tasks), "train_workers": dict(workers)}))
""".strip()


class LocalCluster:
    """A head without CPUs and one worker node per entry of ``cpus`` on this machine; the object
    store (bytes) shared evenly among the worker nodes. With ``head_cpus``, a one-node cluster:
    the head with those CPUs and the whole store. ``ray stop --force`` on exit: run nothing else
    on Ray meanwhile (one local Ray per machine)."""

    def __init__(self, cpus: list[int], object_store_bytes: int | None, head_cpus: int = 0):
        self.cpus, self.store, self.head_cpus = cpus, object_store_bytes, head_cpus
        self.address = f"127.0.0.1:{HEAD_PORT}"
        self.dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        self.env.update(PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}", RAY_AUTH_MODE="token")

    def _ray(self, *args: str) -> None:
        done = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)}: {done.stderr[-2000:]}")

    def __enter__(self) -> "LocalCluster":
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=self.env, capture_output=True, timeout=300)
        self._ray("get-auth-token", "--generate")
        common = ["--disable-usage-stats"]
        head_store = self.store if self.head_cpus and self.store else None if self.head_cpus else 200_000_000
        self._ray("start", "--head", f"--num-cpus={self.head_cpus}", f"--port={HEAD_PORT}",
                  f"--dashboard-port={DASHBOARD_PORT}", f"--dashboard-agent-listen-port={AGENT_PORT}",
                  *([f"--object-store-memory={head_store}"] if head_store else []), *common)
        for i, n in enumerate(self.cpus, start=1):
            store = [f"--object-store-memory={self.store // len(self.cpus)}"] if self.store else []
            self._ray("start", f"--address={self.address}", f"--num-cpus={n}",
                      f"--dashboard-agent-listen-port={AGENT_PORT + i}", *store, *common)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=self.env, capture_output=True, timeout=300)

    def job(self, args: list[str], log: Path, timeout: float) -> dict:
        """A job's driver connected to this cluster: its wall time and exit status."""
        with open(log, "w") as out:
            t0 = time.perf_counter()
            try:
                rc = subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args, "--address", self.address], cwd=REPO,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        return {"wall_s": round(time.perf_counter() - t0, 1), "rc": rc}

    def nodes_used(self) -> dict:
        """Finished tasks and training workers so far, by node."""
        done = subprocess.run([sys.executable, "-c", NODES_USED, self.dashboard], env=self.env, capture_output=True,
                              text=True, timeout=300)
        return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}


def train_args(prepared: Path, target: Path) -> list[str]:
    """One epoch of the ID model (SASRec's shape, the sampled loss of a large catalog) on the
    prepared sources, two workers of one CPU."""
    return ["pretrain", "--config", "ray_jobs/configs/pretrain_demo.yaml", "--set", f"data.prepared={prepared}",
            "--set", "model.use_text=false", "--set", "model.use_item_ids=true", "--set", "model.loss=sampled",
            "--set", "train.epochs=1",
            "--set", "scaling.num_workers=2", "--set", "scaling.cpus_per_worker=1", "--set", "scaling.torch_threads=1",
            "--set", f"run.storage_path={target / 'runs'}", "--set", "run.name=two-nodes",
            "--set", f"export_dir={target / 'model'}"]


def two_node_stage(events: int, folder: Path, args, out: Path, record, same_output) -> None:
    """Prepare and one training epoch on two worker nodes, then on one; rows for both."""
    from ray_jobs.common import parse_bytes

    store = parse_bytes(args.object_store_memory) if args.object_store_memory else None
    results = {}
    for layout, cpus in (("two-nodes", [1, 1]), ("one-node", [2])):
        target = out / f"{layout}-{events}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with LocalCluster(cpus, store) as cluster, PeakMemory() as mem:
            print(f"  {layout}: cluster of {len(cpus)} worker node(s) with {cpus} CPUs", flush=True)
            prepare = cluster.job(["prepare", "--config", str(folder / "prepare.yaml"),
                                   "--set", f"output_dir={target / 'prepared'}"], out / f"{layout}-prepare-{events}.log",
                                  args.timeout)
            prepare_nodes = cluster.nodes_used()
            train = cluster.job(train_args(target / "prepared", target), out / f"{layout}-train-{events}.log",
                                args.timeout) if prepare["rc"] == 0 else {"rc": 1, "wall_s": 0.0}
            train_nodes = cluster.nodes_used()
        best = {}
        if train["rc"] == 0:
            best = json.loads((target / "model" / "config.json").read_text())["training"]["best"]
        results[layout] = target
        row = {"wall_s": round(prepare["wall_s"] + train["wall_s"], 1), "peak_mib": round(mem.peak),
               "rc": max(prepare["rc"], train["rc"]), "prepare_s": prepare["wall_s"], "train_s": train["wall_s"],
               "prepare_tasks": prepare_nodes.get("tasks"), "train_workers": train_nodes.get("train_workers"),
               "val_ndcg@10": best.get("val_ndcg@10")}
        print(f"  {layout}: prepare {prepare['wall_s']} s (tasks by node {row['prepare_tasks']}), one epoch "
              f"{train['wall_s']} s (workers by node {row['train_workers']}), validation NDCG@10 "
              f"{row['val_ndcg@10']}", flush=True)
        record(layout, events, row)
    one, two = record.find("one-node", events), record.find("two-nodes", events)
    if one["rc"] == 0 and two["rc"] == 0:
        two["same_output"] = same_output(results["one-node"] / "prepared", results["two-nodes"] / "prepared")
        # Not bit-equal: which blocks each training worker reads is Ray Data's split, made as
        # the blocks come, on one node as on two
        two["val_ndcg@10_one_node"] = one["val_ndcg@10"]
        print(f"  the same prepared output on two nodes as on one: {two['same_output']}; validation NDCG@10 "
              f"{two['val_ndcg@10']:.4f} against {one['val_ndcg@10']:.4f}", flush=True)
        record.save()
    if not args.keep:
        for target in results.values():
            shutil.rmtree(target, ignore_errors=True)
