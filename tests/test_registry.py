"""The model registry: numbered versions, a latest pointer written last, cards, loading."""

import json

import pytest

from interest_model import load_model, registry
from tests.models import tiny_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("export"))[0]


def test_register_versions_latest_and_load(exported, tmp_path):
    root = str(tmp_path / "registry")
    first = registry.register(root, "ml100k", str(exported), {"metrics": {"val_ndcg@10": 0.1},
                                                              "trial_config": {"lr": 0.001}, "data_manifest_hash": "abc"})
    second = registry.register(root, "ml100k", str(exported), {"metrics": {"val_ndcg@10": 0.2}})
    assert (first["version"], second["version"]) == (1, 2)
    assert registry.list_models(root) == [{"name": "ml100k", "versions": [1, 2], "latest": 2}]
    card = registry.show(root, "ml100k")
    assert card["version"] == 2 and card["metrics"] == {"val_ndcg@10": 0.2} and card["code_version"]
    pinned = registry.show(root, "ml100k:1")
    assert pinned["trial_config"] == {"lr": 0.001} and pinned["data_manifest_hash"] == "abc"
    model = load_model(registry.local_model_dir(root, "ml100k:1"))  # the version directory is the model
    assert len(model.recommend(["i1", "i2"], k=3)) == 3
    assert json.loads((tmp_path / "registry/ml100k/latest.json").read_text()) == {"version": 2}


def test_partial_versions_are_invisible_and_bad_refs_are_clear(exported, tmp_path):
    root = str(tmp_path / "registry")
    registry.register(root, "m", str(exported), {})
    (tmp_path / "registry/m/2").mkdir()  # a copy that never finished: no card
    (tmp_path / "registry/m/.staging-x").mkdir()
    assert registry.versions(root, "m") == [1]
    assert registry.register(root, "m", str(exported), {})["version"] == 3  # 2 stays taken
    for ref, message in [("m:9", "no version 9"), ("nope", "no model 'nope'"), ("m:x", "bad version"),
                         ("../etc", "bad model name")]:
        with pytest.raises(registry.RegistryError, match=message):
            registry.show(root, ref)
    with pytest.raises(registry.RegistryError, match="no exported model"):
        registry.register(root, "m", str(tmp_path / "missing"), {})


def test_registry_cli_lists_and_shows(exported, tmp_path, capsys):
    from ray_jobs.cli import main

    root = str(tmp_path / "registry")
    assert main(["registry", "--root", root, "list"]) == 0
    assert "no models registered" in capsys.readouterr().out
    registry.register(root, "demo", str(exported), {"metrics": {"test_ndcg@10": 0.05}})
    assert main(["registry", "--root", root, "list"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["registry", "--root", root, "show", "demo:1"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"test_ndcg@10": 0.05}
    assert main(["registry", "--root", root, "show", "demo:2"]) == 2
    assert "no version 2" in capsys.readouterr().err
