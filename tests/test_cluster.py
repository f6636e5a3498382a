"""Every file in cluster/ parses and carries what its kind needs; one Ray version and one image
across them, the Dockerfile and pyproject.toml; the jobs the manifests run have valid configs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
IMAGE_DIR = "/home/ray/interest-transfer"  # where cluster/Dockerfile puts the project


def _ray_pin() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', text).group(1)


def _image() -> str:
    """The image cluster/Dockerfile documents building."""
    return re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", (CLUSTER / "Dockerfile").read_text()).group(1)


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _cluster_specs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        doc = _load(path)
        spec = {"RayCluster": lambda d: d["spec"], "RayJob": lambda d: d["spec"]["rayClusterSpec"],
                "RayService": lambda d: d["spec"]["rayClusterConfig"]}[doc["kind"]](doc)
        out.append((path.name, spec))
    return out


def test_every_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        _load(path)


def test_one_ray_version_and_one_image_everywhere():
    ray = _ray_pin()
    image = _image()
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray)}-py\d+-gpu$", dockerfile, re.M)
    assert f"ray{ray}" in image
    for name, spec in _cluster_specs():
        assert str(spec["rayVersion"]) == ray, name
        assert {c["image"] for c in _containers(spec)} == {image}, name
    for path in (CLUSTER / "launcher").glob("*.yaml"):
        assert _load(path)["docker"]["image"] == image, path


def test_raycluster_has_a_workless_head_cpu_and_gpu_groups_autoscaling_and_token_auth():
    doc = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("job", ["pretrain", "transfer", "tune"])
def test_rayjob_runs_a_valid_job_config_and_cleans_up(job):
    from ray.runtime_env import RuntimeEnv

    from interest_model.experiments import TuneConfig
    from interest_model.training.config import PretrainConfig, TransferConfig

    doc = _load(CLUSTER / "kuberay" / f"rayjob-{job}.yaml")
    assert doc["kind"] == "RayJob" and doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", f"ray_jobs.{job}"]
    config = argv[argv.index("--config") + 1].replace(IMAGE_DIR, str(REPO))
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cls = {"pretrain": PretrainConfig, "transfer": TransferConfig, "tune": TuneConfig}[job]
    cls.load(config, overrides)  # the job would start: a valid config with shared-storage URIs
    assert any("s3://" in o for o in overrides)
    if job in ("pretrain", "transfer"):
        groups = spec["rayClusterSpec"]["workerGroupSpecs"]
        assert any("nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in groups)


def test_rayservice_embeds_the_committed_serve_config():
    from ray.serve.schema import ServeDeploySchema

    doc = _load(CLUSTER / "kuberay" / "rayservice.yaml")
    assert doc["kind"] == "RayService"
    embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    committed = _load(REPO / "serving" / "serve_config.yaml")
    for mine, theirs in zip(embedded["applications"], committed["applications"], strict=True):
        assert mine["import_path"] == theirs["import_path"] and mine["deployments"] == theirs["deployments"]
        assert mine["runtime_env"]["env_vars"]["INTEREST_MODEL"]


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_launcher_config_is_valid_for_ray_up_with_gpu_spot_workers(cloud):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(CLUSTER / "launcher" / f"{cloud}.yaml")
    assert raw["provider"]["type"] == cloud
    config = prepare_config(raw)
    validate_config(config)  # Ray's own schema for `ray up`
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    nodes = [t["node_config"] for name, t in types.items() if name != raw["head_node_type"]]
    if cloud == "aws":
        assert any(n["InstanceType"].startswith(("g5", "p4", "p5")) for n in nodes)
        assert any(n.get("InstanceMarketOptions", {}).get("MarketType") == "spot" for n in nodes)
    else:
        assert any(n.get("guestAccelerators") for n in nodes)
        assert any(s.get("provisioningModel") == "SPOT" for n in nodes for s in n.get("scheduling", []))
    assert all("RAY_AUTH_MODE=token" in " ".join(raw[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))



def test_every_cluster_that_serves_starts_serve_with_our_data_path():
    """SERVE_ENV (HAProxy, Serve's throughput settings, retries) is what `interest serve` sets for
    a local cluster; the clusters in cluster/ that run the endpoint set the same values."""
    from ray_jobs.serve import SERVE_ENV

    for name in ("raycluster.yaml", "rayservice.yaml"):
        doc = _load(CLUSTER / "kuberay" / name)
        spec = doc["spec"]["rayClusterConfig"] if doc["kind"] == "RayService" else doc["spec"]
        for container in _containers(spec):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert {k: env.get(k) for k in SERVE_ENV} == SERVE_ENV, (name, container["name"])
    for cloud in ("aws", "gcp"):
        raw = _load(CLUSTER / "launcher" / f"{cloud}.yaml")
        for command in [*raw["head_start_ray_commands"], *raw["worker_start_ray_commands"]]:
            if "ray start" in command:
                words = shlex.split(command.replace(";", " ; "))
                assert all(f"{k}={v}" in words for k, v in SERVE_ENV.items()), (cloud, command)
