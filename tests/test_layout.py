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


def _module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its code (an import inside a
    function is an edge too: deferring an import hides a cycle, it does not remove it)."""
    files = {}
    for path in (REPO / package).rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_library_has_no_import_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check sees one
    cycles = _cycles(_module_graph("interest_model"))
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_350_lines():
    long = {str(p.relative_to(REPO)): n for d in ("interest_model", "ray_jobs", "serving") for p in (REPO / d).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"split these by concern: {long}"


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
