"""The serving config: which model, how it is served, the limits of the API.

One typed config, like every job's: YAML (``INTEREST_SERVE_CONFIG``) plus ``key=value``
overrides. In a Ray Serve app the replicas read it from their environment, which the serve
config's ``runtime_env.env_vars`` sets:

    INTEREST_MODEL       registry reference, name[:version|@alias] (default: the config's ``model``)
    INTEREST_REGISTRY    registry: an MLflow tracking URI or a local folder (default:
                         $MLFLOW_TRACKING_URI, else ./registry)
    INTEREST_SERVE_SET   JSON list of overrides, e.g. '["max_batch_size=32"]'

Deployment options (CPUs, autoscaling, max_ongoing_requests) are set from here when
the app is built; the serve config YAML written by ``serve build`` carries them too, and Serve
applies the file's. ``interest serve --set`` writes the fields it sets into the file's
deployments, so the order is: --set, then the file, then the defaults here.
"""

from __future__ import annotations

import json
import os

from pydantic import Field, model_validator

from interest_model.config import ConfigError, Frozen, JobConfig
from interest_model.data.config import PseudonymConfig


class AutoscalingSpec(Frozen):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas exceeds max_replicas")
        return self


class ServeConfig(JobConfig):
    model: str = "ml100k-transfer"  # registry reference: name[:version|latest|@alias]
    registry: str | None = None  # MLflow URI or local folder; None: $MLFLOW_TRACKING_URI, else ./registry
    model_dir: str | None = None  # serve an exported directory directly (no registry)
    item_store: str | None = None  # items added by text; default <registry>/items/<name> (local registry)
    # user encoding: dynamic batching
    max_batch_size: int = Field(16, ge=1, le=1024)
    # the longest a forming batch waits for requests already in the replica (parsed, validated)
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=5)
    # encode and score users with the model compiled ahead of time when the replica starts (needs
    # a C++ compiler; seconds; eager, with a warning, where it cannot): interest_model/online/ranker.py
    compile_encoder: bool = True
    # compile in the background: the replica is ready as soon as its catalog is, answers eagerly
    # meanwhile (slower per request, same answers) and switches to the compiled ranker when it is
    # built; False: the replica reports ready only once compiled
    compile_in_background: bool = True
    # run a recommend batch on the replica's event loop when it is one compiled call (no history
    # event given by text, exact ranking): that call keeps the GIL, so a worker thread would block
    # the loop as long and only add hand-overs of the GIL, which cost CPU per request under load
    # (docs/serving_speed.md). Anything else (eager torch, text encoding, explanations,
    # items added) runs in a worker thread.
    compiled_batches_on_loop: bool = True
    # retrieval: exact search up to this many items, a faiss HNSW graph above
    exact_search_max_items: int = Field(50_000, ge=0)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_search: int = Field(128, ge=16)
    # where a replica keeps the graph of a catalog above exact_search_max_items between starts
    # (minutes to build at a million items, seconds to read); per node; None: built at every start
    index_cache_dir: str | None = "~/.cache/interest/item_index"
    # API limits and security
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_history: int = Field(1000, ge=1)
    auth_token_env: str = "INTEREST_API_TOKEN"  # bearer token required when this variable is set
    pseudonymize: PseudonymConfig = PseudonymConfig()
    # one INFO line per request (route, request id, hashed user, history size), beside Serve's access
    # log (route, status, latency, request id): off, as it cost 13 % of the CPU per request under
    # load (docs/serving_speed.md)
    log_requests: bool = False
    # the replica's Python garbage collector: collect the youngest generation after this many new
    # container objects (Python's default is 700). At 700 a loaded replica collected about 150 times
    # a second, each scanning the objects of the requests in flight: a share of every request's
    # CPU (docs/serving_speed.md). Memory that needs it (reference cycles) is still collected.
    gc_threshold: int = Field(10_000, ge=100)
    # the deployment (one: the ingress holds the model); a fixed replica count is min = max
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    max_ongoing_requests: int = Field(64, ge=1)
    replica_cpus: float = Field(1.0, gt=0)  # CPUs reserved per replica; torch uses as many threads

    @classmethod
    def from_env(cls) -> "ServeConfig":
        overrides = []
        if os.environ.get("INTEREST_MODEL"):
            overrides.append(f"model={os.environ['INTEREST_MODEL']}")
        if os.environ.get("INTEREST_REGISTRY"):
            overrides.append(f"registry={os.environ['INTEREST_REGISTRY']}")
        raw = os.environ.get("INTEREST_SERVE_SET", "").strip()
        if raw:
            try:
                extra = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"INTEREST_SERVE_SET is not a JSON list of key=value strings: {exc}") from None
            if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
                raise ConfigError("INTEREST_SERVE_SET must be a JSON list of key=value strings")
            overrides += extra
        return cls.load(os.environ.get("INTEREST_SERVE_CONFIG") or None, overrides)
