"""The project's shape: library free of Ray, every job reachable, configs and cluster files valid."""

import ast
from pathlib import Path

import yaml

from tests.conftest import REPO


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_ray():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "interest_model").rglob("*.py") if "ray" in _imports(p)]
    assert offenders == []


def test_only_ray_jobs_call_ray_init():
    callers = []
    for p in REPO.rglob("*.py"):
        rel = p.relative_to(REPO)
        if rel.parts[0] in (".venv", "tests", ".cache"):
            continue
        if "ray.init(" in p.read_text():
            callers.append(str(rel))
    assert callers == ["ray_jobs/common.py"]


def test_runtime_env_parses_and_excludes_local_state():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)
    assert env["working_dir"] == "."
    for heavy in (".venv", "data", "outputs", ".git", "registry"):
        assert heavy in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())
