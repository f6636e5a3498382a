"""The model registry on MLflow: numbered versions, aliases, cards, loading, a registration that\nfails halfway leaving no version, clear errors for bad references."""

import json

import pytest

from interest_model import load_model, registry, tracking
from tests.models import tiny_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("export"))[0]


def test_register_versions_latest_aliases_and_load(exported, tmp_path):
    root = str(tmp_path / "registry")
    first = registry.register(root, "ml100k", str(exported), {"metrics": {"val_ndcg@10": 0.1},
                                                              "trial_config": {"lr": 0.001}, "data_manifest_hash": "abc"})
    second = registry.register(root, "ml100k", str(exported), {"metrics": {"val_ndcg@10": 0.2}}, alias="champion")
    assert (first["version"], second["version"]) == (1, 2)
    assert registry.list_models(root) == [{"name": "ml100k", "versions": [1, 2], "latest": 2,
                                           "aliases": {"champion": 2}}]
    card = registry.show(root, "ml100k")
    assert card["version"] == 2 and card["metrics"] == {"val_ndcg@10": 0.2} and card["code_version"]
    assert card["aliases"] == ["champion"] and registry.show(root, "ml100k@champion")["version"] == 2
    pinned = registry.show(root, "ml100k:1")
    assert pinned["trial_config"] == {"lr": 0.001} and pinned["data_manifest_hash"] == "abc"
    model = load_model(registry.local_model_dir(root, "ml100k:1"))  # the version's artifacts are the model
    assert len(model.recommend(["i1", "i2"], k=3)) == 3
    registry.set_alias(root, "ml100k:1", "champion")  # promotion is one alias move
    assert registry.resolve(root, "ml100k@champion")[1] == 1 and registry.resolve(root, "ml100k")[1] == 2
    # The store is MLflow's: its own client sees the versions, the alias and each version's run.
    client = tracking.client(root)
    assert int(client.get_model_version_by_alias("ml100k", "champion").version) == 1
    run = client.get_run(client.get_model_version("ml100k", "1").run_id)
    assert run.data.params["lr"] == "0.001" and run.data.metrics["val_ndcg_at_10"] == 0.1
    assert registry.item_store(root, "ml100k") == str(tmp_path / "registry/items/ml100k")


def test_a_failed_registration_leaves_no_version_and_bad_refs_are_clear(exported, tmp_path, monkeypatch):
    root = str(tmp_path / "registry")
    registry.register(root, "m", str(exported), {})
    calls = []

    def copy_then_fail(self, local, path=None):
        calls.append(local)
        raise OSError("disk full")

    monkeypatch.setattr(tracking.Run, "log_artifacts", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        registry.register(root, "m", str(exported), {})
    monkeypatch.undo()
    assert calls and registry.versions(root, "m") == [1]  # no version points at a partial copy
    failed = tracking.client(root).search_runs([tracking.experiment_id("m", root)], "attributes.status = 'FAILED'")
    assert len(failed) == 1  # the attempt is on record, marked failed
    assert registry.register(root, "m", str(exported), {})["version"] == 2
    for ref, message in [("m:9", "no version 9"), ("nope", "no model 'nope'"), ("m:x", "bad version"),
                         ("../etc", "bad model name"), ("m@gone", "no alias 'gone'"), ("m@latest", "bad alias")]:
        with pytest.raises(registry.RegistryError, match=message):
            registry.show(root, ref)
    with pytest.raises(registry.RegistryError, match="no exported model"):
        registry.register(root, "m", str(tmp_path / "missing"), {})
    with pytest.raises(ValueError, match="not an MLflow store"):
        registry.list_models("s3://bucket/registry")


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
    assert main(["registry", "--root", root, "alias", "demo:1", "champion"]) == 0
    assert "demo@champion -> version 1" in capsys.readouterr().out
    assert main(["registry", "--root", root, "list"]) == 0
    assert "@champion -> 1" in capsys.readouterr().out
