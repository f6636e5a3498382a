"""The Ray Serve endpoint over real HTTP on 127.0.0.1, deployed from the committed serve config
the way `interest serve` does, then redeployed with `serve deploy`: every route, every client
error (never a 500), auth, batching, autoscaling values, items added by text, metrics."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(registry: Path, port: int, *overrides: str) -> dict:
    from ray_jobs.serve import DEFAULT_CONFIG, deploy_config

    sets = [f"registry={registry}", "model=tiny", "replica_cpus=0.5", "max_body_bytes=4096",
            "max_batch_size=8", "batch_wait_timeout_s=1.0", "max_ongoing_requests=16", "log_requests=true", *overrides]
    config = deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", port)
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update({"INTEREST_API_TOKEN": TOKEN, "INTEREST_PSEUDONYM_KEY": "serve-test-key"})
    (dep,) = app["deployments"]  # what an operator edits in the YAML; must be what runs
    dep["autoscaling_config"].update(min_replicas=1, max_replicas=3, target_ongoing_requests=2.0)
    dep["ray_actor_options"]["num_cpus"] = 0.5
    dep["max_ongoing_requests"] = 16
    return config


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tiny_pretrained, tmp_path_factory):
    from ray import serve

    from interest_model import registry
    from ray_jobs.serve import deploy, wait_running

    root = tmp_path_factory.mktemp("serve-registry")
    registry.register(str(root), "tiny", str(tiny_pretrained), {"metrics": {}})
    catalog = json.loads((tiny_pretrained / "catalog.json").read_text())
    port = _free_port()
    config = _config(root, port)
    deploy(config)
    wait_running(["interest"], timeout=180)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "catalog": catalog, "registry": root, "port": port, "config": config}
    finally:
        serve.shutdown()  # frees the replicas' CPUs for the rest of the session


def _post(ep, path, body, headers=AUTH, **kw):
    return requests.post(ep["url"] + path, json=body, headers=headers, timeout=60, **kw)


def _history(ep, n=3):
    return [{"item_id": i} for i in ep["catalog"]["item_ids"][:n]]


def test_routes_answer(endpoint):
    ep = endpoint
    scenario = ep["catalog"]["scenarios"][0]
    assert requests.get(ep["url"] + "/healthz", timeout=10).json() == {"status": "ok"}
    info = requests.get(ep["url"] + "/v1/model", headers=AUTH, timeout=10).json()
    assert info["model"] == "tiny:1" and info["scenarios"] == ep["catalog"]["scenarios"] and info["index"] == "exact"
    # compile_encoder (default; this machine has a C++ compiler), in the background: the replica
    # answers before the ranker is built and switches to it when it is
    for _ in range(120):
        if info["user_encoder"] != "compiling":
            break
        time.sleep(1)
        info = requests.get(ep["url"] + "/v1/model", headers=AUTH, timeout=10).json()
    assert info["user_encoder"] == "compiled"
    spec = requests.get(ep["url"] + "/openapi.json", timeout=10).json()
    assert {"/v1/recommend", "/v1/interests", "/v1/items", "/v1/model", "/healthz"} <= set(spec["paths"])
    for path, model in [("/v1/recommend", "RecommendRequest"), ("/v1/interests", "InterestsRequest"),
                        ("/v1/items", "ItemsRequest")]:  # the routes read their bodies themselves
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"} and model in spec["components"]["schemas"]
    answers = spec["paths"]["/v1/recommend"]["post"]["responses"]
    assert {"200", "401", "413", "422"} <= set(answers)
    assert answers["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RecommendResponse"}
    assert "swagger" in requests.get(ep["url"] + "/docs", timeout=10).text.lower()

    r = _post(ep, "/v1/recommend", {"history": _history(ep), "scenario": scenario, "k": 5, "user_id": "alice"},
              headers={**AUTH, "X-Request-ID": "req-abc-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["model"] == "tiny:1" and body["fallback"] is None
    assert body["request_id"] == "req-abc-1" == r.headers["x-request-id"]
    seen = {h["item_id"] for h in _history(ep)}
    assert not seen & {it["item_id"] for it in body["items"]}
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)

    mixed = [*_history(ep, 2), {"text": ep["catalog"]["texts"][5], "event_type": "click"}]
    r = _post(ep, "/v1/interests", {"history": mixed, "scenario": scenario, "k": 4})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["explanation"]["history"]) == 3 and len(out["explanation"]["recommendations"]) == 4
    assert out["top_categories"] and len(out["interest_vector"]) > 0


def test_client_errors_are_4xx_never_500(endpoint):
    ep = endpoint
    scenario = ep["catalog"]["scenarios"][0]
    ok = {"history": _history(ep), "scenario": scenario}
    assert _post(ep, "/v1/recommend", ok, headers={}).status_code == 401
    # POST /v1/recommend is served by a plain Starlette route ahead of FastAPI's (serving/app.py):
    # the app's own 405, exception handlers and middleware still apply.
    from serving.app import api, hot_recommend

    assert api.router.routes[0].endpoint is hot_recommend
    r = requests.get(ep["url"] + "/v1/recommend", headers=AUTH, timeout=10)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"} and r.headers["allow"] == "POST"
    r = _post(ep, "/v1/recommend", ok, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = _post(ep, "/v1/recommend", {"history": [{"item_id": "no-such-item"}, {"item_id": "nor-this"}]})
    assert r.status_code == 422 and r.json()["unknown_item_ids"] == ["no-such-item", "nor-this"]
    assert "no-such-item" in r.json()["detail"]
    r = _post(ep, "/v1/recommend", {"history": [], "scenario": scenario, "k": 4})
    assert r.status_code == 200 and r.json()["fallback"] == "popular" and len(r.json()["items"]) == 4
    big = {"history": [{"text": "x" * 4000}, {"text": "y" * 4000}]}
    assert _post(ep, "/v1/recommend", big).status_code == 413
    chunked = (json.dumps(big)[i:i + 1000].encode() for i in range(0, 9000, 1000))  # no Content-Length
    r = requests.post(ep["url"] + "/v1/recommend", data=chunked, timeout=30,
                      headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    cases = [
        ("/v1/recommend", b"{not json"),
        ("/v1/recommend", {"history": "nope"}),
        ("/v1/recommend", {"history": [], "k": 0}),
        ("/v1/recommend", {"history": [{"item_id": "a", "text": "b"}]}),
        ("/v1/recommend", {"history": [{}]}),
        ("/v1/recommend", {"history": _history(ep), "scenario": "no-such-scenario"}),
        ("/v1/recommend", {"history": [{"item_id": "a", "event_type": "teleport"}]}),
        ("/v1/recommend", {"unexpected": 1}),
        ("/v1/interests", {"history": []}),
        ("/v1/items", {"items": []}),
        ("/v1/items", {"items": [{"item_id": "n1", "text": "t", "scenarios": ["nowhere"]}]}),
        ("/v1/recommend", [1, 2, 3]),
    ]
    for path, body in cases:
        if isinstance(body, bytes):
            r = requests.post(ep["url"] + path, data=body, headers={**AUTH, "Content-Type": "application/json"},
                              timeout=30)
        else:
            r = _post(ep, path, body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)


MAX_ERROR_BODY = 4096  # bytes: a client error never grows with the request


def test_any_unicode_anywhere_is_a_bounded_4xx_or_an_answer(endpoint):
    """Lone surrogates (valid JSON, not Unicode), NUL, right-to-left marks, very long strings, in
    every text field of every route: never a 5xx, and an error body of a few KB at most."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ep = endpoint
    wild = st.one_of(
        st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=40),  # surrogates too
        st.sampled_from(["\udcff broken", "\ud800", "a\x00b", "\u202eevil\u202c", "\ufeff", "x" * 3000]))
    bodies = {
        "history.text": lambda s: ("/v1/recommend", {"history": [{"text": s}], "k": 5}),
        "history.item_id": lambda s: ("/v1/recommend", {"history": [{"item_id": s}, {"item_id": s + "2"}], "k": 5}),
        "user_id": lambda s: ("/v1/recommend", {"user_id": s, "history": _history(ep), "k": 3}),
        "scenario": lambda s: ("/v1/interests", {"history": _history(ep), "scenario": s}),
        "filter": lambda s: ("/v1/recommend", {"history": _history(ep), "filter": {"categories": [s]}}),
        "items": lambda s: ("/v1/items", {"items": [{"item_id": "fuzz-" + s[:50], "text": s, "categories": [s[:20]]}]}),
    }

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(bodies)), wild)
    def check(where, text):
        path, body = bodies[where](text)
        data = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as \\udcff
        r = requests.post(ep["url"] + path, data=data, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
        assert r.status_code < 500, (where, text[:80], r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert len(r.content) <= MAX_ERROR_BODY, (where, len(r.content))
            assert r.json()["detail"]

    check()
    # The report's case, and an echo that stays bounded (the test endpoint takes 4 KB bodies).
    r = _post(ep, "/v1/recommend", {"history": [{"text": "\udcff broken"}], "k": 5})
    assert r.status_code == 422 and "unicode" in r.text.lower() and len(r.content) <= MAX_ERROR_BODY
    r = _post(ep, "/v1/recommend", {"history": "x" * 3900})  # a 422 used to send the input back whole
    assert r.status_code == 422 and len(r.content) < 500 and "xxxx" not in r.text, r.text[:200]
    r = _post(ep, "/v1/recommend", {"history": [{"item_id": "z" * 600}] * 5, "k": 5})
    assert r.status_code == 422 and len(r.content) < 1500 and "zzzz" not in r.text, len(r.content)


def test_schemathesis_finds_no_server_error(endpoint):
    """Every operation of the published OpenAPI spec, valid and invalid inputs generated from it."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    ep = endpoint
    schema = schemathesis.openapi.from_url(ep["url"] + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    cases = st.one_of([op.as_strategy(mode) for op in ops for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)])

    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(cases)
    def check(case):
        r = case.call(base_url=ep["url"], headers=AUTH, timeout=60)
        assert r.status_code < 500, (case.method, case.path, str(case.body)[:200], r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert len(r.content) <= MAX_ERROR_BODY

    check()


def test_concurrent_requests_are_batched(endpoint):
    ep = endpoint
    scenario = ep["catalog"]["scenarios"][0]
    ids = ep["catalog"]["item_ids"]
    bodies = [{"history": [{"item_id": ids[i]}, {"item_id": ids[i + 1]}], "scenario": scenario, "k": 3}
              for i in range(16)]
    started = time.monotonic()
    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: _post(ep, "/v1/recommend", b), bodies))
    assert all(a.status_code == 200 for a in answers)
    sizes = [int(a.headers["x-batch-size"]) for a in answers]
    assert max(sizes) > 1, sizes
    # A batch waits (up to 1 s here) only for requests already in the replica: none of these
    # waited for one that never came.
    assert time.monotonic() - started < 0.9
    # A request refused before the batcher (422) is not waited for; a request alone goes at once.
    assert _post(ep, "/v1/recommend", {"history": "not a list", "scenario": scenario}).status_code == 422
    started = time.monotonic()
    alone = _post(ep, "/v1/recommend", bodies[0])
    assert alone.status_code == 200 and alone.headers["x-batch-size"] == "1"
    assert time.monotonic() - started < 0.5


def test_item_added_by_text_is_recommended_next(endpoint):
    ep = endpoint
    scenario = ep["catalog"]["scenarios"][0]
    new = {"item_id": "brand-new-1", "title": "Brand New", "text": ep["catalog"]["texts"][0] + " sequel",
           "categories": ["FreshCategory"]}
    r = _post(ep, "/v1/items", {"items": [new]})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [{"item_id": "brand-new-1", "status": "created", "scenarios": ep["catalog"]["scenarios"]}]
    r = _post(ep, "/v1/recommend", {"history": _history(ep), "scenario": scenario, "k": 3,
                                    "filter": {"categories": ["FreshCategory"]}})
    assert [it["item_id"] for it in r.json()["items"]] == ["brand-new-1"]
    n = len(ep["catalog"]["item_ids"]) + 1
    everything = _post(ep, "/v1/recommend", {"history": _history(ep), "scenario": scenario, "k": min(n, 1000)})
    assert "brand-new-1" in [it["item_id"] for it in everything.json()["items"]]
    r = _post(ep, "/v1/recommend", {"history": [{"item_id": "brand-new-1"}], "scenario": scenario, "k": 3})
    assert r.status_code == 200  # usable in histories at once
    assert (ep["registry"] / "items" / "tiny" / "items.jsonl").exists()


def test_the_demo_conversation_recommends_for_a_user_of_another_platform(endpoint, tiny_prepared):
    """`make demo`'s conversation: a shop-b user's history, given by item texts, answered in
    shop-a with a reason per item; the item added by its text is found."""
    from serving.client import InterestClient, demo

    lines = []
    answers = demo(InterestClient(endpoint["url"], token=TOKEN), str(tiny_prepared), "shop-a", out=lines.append,
                   source="shop-b")
    explained = answers["source_user"]["explanation"]["recommendations"]
    catalog = endpoint["catalog"]
    shop_a = {catalog["item_ids"][j - 1] for j in catalog["scenario_items"]["shop-a"]}
    assert len(explained) == 5 and all(r["because"] for r in explained) and {r["item_id"] for r in explained} <= shop_a
    text = "\n".join(lines)
    assert "of shop-b (never seen on shop-a)" in text and "because of" in text
    assert "midnight robots (2026)" in [it["item_id"] for it in answers["after_add"]["items"]]
    assert answers["cold"]["fallback"] == "popular"


def test_metrics_are_exported_to_prometheus(endpoint):
    import ray

    port = ray._private.worker._global_node.metrics_export_port
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "interest_batch_size_bucket" in text and "interest_request_latency_ms_bucket" in text:
            break
        time.sleep(3)
    assert "interest_batch_size_bucket" in text and "interest_request_latency_ms_bucket" in text
    assert 'route="/v1/recommend"' in text


def test_serve_deploy_of_the_file_applies_its_values_and_keeps_added_items(endpoint, tmp_path):
    """`serve deploy` of an edited copy of the committed file: the deployed autoscaling values are
    the file's; the model replicas restart (new settings) and still have the item added above."""
    import ray
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from ray_jobs.serve import wait_running

    ep = endpoint
    added = requests.get(ep["url"] + "/v1/model", headers=AUTH, timeout=10).json()["added_items"]
    config = copy.deepcopy(ep["config"])
    app = config["applications"][0]
    sets = json.loads(app["runtime_env"]["env_vars"]["INTEREST_SERVE_SET"]) + ["max_batch_size=4"]
    app["runtime_env"]["env_vars"]["INTEREST_SERVE_SET"] = json.dumps(sets)
    (model_dep,) = app["deployments"]
    model_dep["autoscaling_config"].update(max_replicas=2, target_ongoing_requests=3.0)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    dashboard = "http://" + ray._private.worker.get_dashboard_url()
    done = subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", str(path), "-a", dashboard],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    time.sleep(2)
    wait_running(["interest"], timeout=180)
    details = ServeSubmissionClient(dashboard).get_serve_details()
    deployed = details["applications"]["interest"]["deployments"]["InterestApi"]["deployment_config"]
    assert deployed["autoscaling_config"]["min_replicas"] == 1
    assert deployed["autoscaling_config"]["max_replicas"] == 2
    assert deployed["autoscaling_config"]["target_ongoing_requests"] == 3.0
    assert deployed["max_ongoing_requests"] == 16
    scenario = ep["catalog"]["scenarios"][0]
    deadline = time.monotonic() + 60
    while True:  # the old replicas drain while the new ones start
        r = _post(ep, "/v1/recommend", {"history": [{"item_id": "brand-new-1"}], "scenario": scenario, "k": 2})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200, r.text
    info = requests.get(ep["url"] + "/v1/model", headers=AUTH, timeout=10).json()
    assert info["added_items"] == added >= 1  # every item added by text so far, "brand-new-1" among them


def test_predict_rows_are_the_endpoints_answers(endpoint, tiny_prepared, tmp_path):
    # `interest predict` and the endpoint run the same code: for the same histories (the users'
    # events before their test event) the same items, scores and category interests.
    import pandas as pd

    from interest_model.data.prepared import PreparedData
    from ray_jobs.predict import main

    ep = endpoint
    scenario = ep["catalog"]["scenarios"][0]
    seqs = PreparedData(str(tiny_prepared)).sequences(scenario).sort_values("user_id").head(4)
    out = tmp_path / "predict"
    assert main(["--config", "ray_jobs/configs/predict_demo.yaml", "--set", f"registry={ep['registry']}",
                 "--set", "model=tiny", "--set", f"data.prepared={tiny_prepared}", "--set", f"data.scenario={scenario}",
                 "--set", f"data.users={list(seqs['user_id'])}", "--set", "until=test", "--set", "k=5",
                 "--set", "cpus_per_actor=0.25", "--set", f"output_dir={out}"]) == 0
    rows = pd.read_parquet(out / "predictions").set_index("user_id")
    for seq in seqs.itertuples():
        end = seq.loo_valid_end
        history = [{"item_id": i, "event_type": e, "timestamp": int(t)}
                   for i, e, t in zip(seq.item_ids[:end], seq.event_types[:end], seq.timestamps[:end])]
        rec = _post(ep, "/v1/recommend", {"history": history, "scenario": scenario, "k": 5}).json()
        why = _post(ep, "/v1/interests", {"history": history, "scenario": scenario, "k": 5}).json()
        row = rows.loc[seq.user_id]
        assert list(row["items"]) == [it["item_id"] for it in rec["items"]]
        assert list(row["scores"]) == pytest.approx([it["score"] for it in rec["items"]], abs=1e-4)
        assert list(row["categories"]) == [c["category"] for c in why["top_categories"]]
        assert list(row["category_weights"]) == pytest.approx([c["weight"] for c in why["top_categories"]], abs=1e-5)
        assert list(row["predicted_categories"]) == [c["category"] for c in why["top_categories"] if c["predicted"]]
        assert row["model"] == rec["model"] == "tiny:1"
