import pytest

from interest_model.config import ConfigError
from interest_model.data.config import PrepareConfig
from tests.conftest import CONFIGS


def test_every_shipped_config_loads():
    from interest_model.evaluation.config import EvaluateConfig
    from interest_model.experiments import BenchmarkConfig, TuneConfig
    from interest_model.online.predict import PredictConfig
    from interest_model.training.config import PretrainConfig, TransferConfig

    from interest_model.models.features import EmbedJobConfig

    jobs = {"pretrain": PretrainConfig, "transfer": TransferConfig, "evaluate": EvaluateConfig,
            "benchmark": BenchmarkConfig, "tune": TuneConfig, "predict": PredictConfig, "embed": EmbedJobConfig}
    for path in sorted(CONFIGS.glob("*.yaml")):
        cls = jobs.get(path.name.split("_")[0], PrepareConfig)
        cfg = cls.load(path)  # raises on any unknown key or wrong type
        stages = {BenchmarkConfig: (("pretrain", PretrainConfig), ("transfer", TransferConfig), ("evaluate", EvaluateConfig)),
                  TuneConfig: (("ours", TransferConfig), ("sasrec", PretrainConfig), ("evaluate", EvaluateConfig))}
        for stage, stage_cls in stages.get(cls, ()):  # the job configs it names exist and load
            arm = getattr(cfg, stage)
            if arm is None:  # e.g. an in-domain benchmark has no transfer stage
                continue
            space = [f"{k}={v.example()}" for k, v in getattr(arm, "space", {}).items()]
            stage_cls.load(arm.config, [*arm.set, *space])  # searched keys are fields of the job


def test_overrides_reach_nested_fields_and_list_items():
    cfg = PrepareConfig.load(CONFIGS / "demo.yaml", ["kcore.user_k=10", "input.sources.1.name=other",
                                                     "scenarios.1.source=other", "splits.time=null"])
    assert cfg.kcore.user_k == 10
    assert cfg.input.sources[1].name == "other"
    assert cfg.splits.time is None
    assert cfg.schemes() == ["loo"]


def test_config_is_frozen():
    cfg = PrepareConfig.load(CONFIGS / "tiny.yaml")
    with pytest.raises(Exception):
        cfg.kcore.user_k = 1  # type: ignore[misc]


@pytest.mark.parametrize("override, message", [
    ("kcore.user_kk=3", "kcore.user_kk"),  # unknown key
    ("kcore.user_k=minus", "kcore.user_k"),  # wrong type
    ("scenarios.0.source=nowhere", "unknown source"),
    ("input.sources.0.format=xml", "input.sources.0.format"),
    ("scenarios.7.source=x", "not a valid index"),
])
def test_bad_config_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        PrepareConfig.load(CONFIGS / "tiny.yaml", [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PrepareConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PrepareConfig.load(bad)


def test_key_is_redacted_and_hash_is_stable(monkeypatch):
    a = PrepareConfig.load(CONFIGS / "tiny.yaml", ["pseudonymize.key=secret-1"])
    b = PrepareConfig.load(CONFIGS / "tiny.yaml", ["pseudonymize.key=secret-2"])
    assert "secret-1" not in str(a.to_public_dict())
    assert a.config_hash() == b.config_hash()  # the key is not part of the config's identity
    c = PrepareConfig.load(CONFIGS / "tiny.yaml", ["kcore.user_k=4"])
    assert c.config_hash() != a.config_hash()


def test_key_from_environment_wins_and_missing_key_is_an_error(monkeypatch):
    cfg = PrepareConfig.load(CONFIGS / "tiny.yaml", ["pseudonymize.key=null"])
    monkeypatch.setenv("INTEREST_PSEUDONYM_KEY", "")
    with pytest.raises(ValueError, match="INTEREST_PSEUDONYM_KEY"):
        cfg.pseudonymize.resolve_key()
    monkeypatch.setenv("INTEREST_PSEUDONYM_KEY", "from-env")
    assert cfg.pseudonymize.resolve_key() == b"from-env"


def test_settings_added_later_enter_the_hash_only_when_set():
    """data.history, data.context and DeepSpeed's comm settings came after runs were recorded under
    config hashes: left at their defaults they keep those hashes (a benchmark rerun keeps its
    finished stages)."""
    import hashlib
    import json

    from interest_model.training.config import TransferConfig

    base = ["data.prepared=p", "transfer.init_from=m"]
    cfg = TransferConfig.load(CONFIGS / "transfer_demo.yaml", base)
    public = {k: v for k, v in cfg.to_public_dict().items() if k not in cfg.HASH_EXCLUDE}
    del public["data"]["history"], public["data"]["context"]
    for key in ("overlap_comm", "contiguous_gradients", "reduce_bucket_size"):  # DeepSpeed's, added later too
        del public["deepspeed"][key]
    del public["embed"]["chunk_items"]  # the item features' parts, added later too
    assert cfg.config_hash() == hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()
    merged = TransferConfig.load(CONFIGS / "transfer_demo.yaml", [*base, "data.history=merged"])
    assert merged.config_hash() != cfg.config_hash()
    assert TransferConfig.load(CONFIGS / "transfer_demo.yaml", [*base, "data.context=[a]"]).config_hash() != cfg.config_hash()
    assert TransferConfig.load(CONFIGS / "transfer_demo.yaml",
                               [*base, "deepspeed.overlap_comm=true"]).config_hash() != cfg.config_hash()
