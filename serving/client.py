"""A small HTTP client of the endpoint and the demo conversation ``make demo`` ends with.

    from serving.client import InterestClient
    client = InterestClient("http://127.0.0.1:8000", token=None)
    client.recommend([{"item_id": "heat (1995)"}], scenario="ml-100k", k=5)
"""

from __future__ import annotations

import json
from typing import Any

import requests


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def retrying_session(retries: int = 2, backoff_s: float = 0.2) -> requests.Session:
    """A session that repeats a request whose connection broke or that got a 500/502/503/504,
    up to ``retries`` times with a growing pause. Safe for every route of this API: recommend and
    interests read, adding items is an upsert by id. This is what a replica lost mid-request needs:
    HAProxy answers 500 or closes the connection for the requests it held."""
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    if retries > 0:
        policy = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff_s,
                       status_forcelist=(500, 502, 503, 504), allowed_methods=None, raise_on_status=False)
        adapter = HTTPAdapter(max_retries=policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


class InterestClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, retries: int = 2):
        self.base = base_url.rstrip("/")
        self.session = retrying_session(retries)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        r = self.session.request(method, self.base + path, json=body, timeout=self.timeout)
        data = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        if r.status_code >= 400:
            raise ApiError(r.status_code, data)
        return data

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def model(self) -> dict:
        return self._call("GET", "/v1/model")

    def recommend(self, history: list[dict], scenario: str | None = None, k: int = 10, **extra) -> dict:
        return self._call("POST", "/v1/recommend", {"history": history, "scenario": scenario, "k": k, **extra})

    def interests(self, history: list[dict], scenario: str | None = None, k: int = 10, **extra) -> dict:
        return self._call("POST", "/v1/interests", {"history": history, "scenario": scenario, "k": k, **extra})

    def add_items(self, items: list[dict]) -> dict:
        return self._call("POST", "/v1/items", {"items": items})


def sample_histories(prepared: str, scenario: str, n: int = 1, max_events: int = 20,
                     seed: int = 0) -> list[tuple[str, list[dict]]]:
    """Real users' histories in ``scenario`` from prepared data: the events before each user's
    test event (leave-one-out split), as API history events: [(pseudonymous user id, events)]."""
    import numpy as np

    from interest_model.data.prepared import PreparedData

    seqs = PreparedData(prepared).sequences(scenario, columns=["user_id", "item_ids", "timestamps", "event_types",
                                                               "loo_valid_end"])
    if seqs.empty:
        raise ValueError(f"no sequences of scenario {scenario!r} in {prepared}")
    picked = np.random.default_rng(seed).choice(len(seqs), size=min(n, len(seqs)), replace=False)
    out = []
    for _, row in seqs.iloc[picked].iterrows():
        end = int(row["loo_valid_end"])
        start = max(0, end - max_events)
        events = [{"item_id": str(i), "event_type": str(e), "timestamp": int(t)} for i, t, e in
                  zip(row["item_ids"][start:end], row["timestamps"][start:end], row["event_types"][start:end])]
        out.append((str(row["user_id"]), events))
    return out


def source_history(prepared: str, scenario: str, max_events: int = 20, seed: int = 0) -> tuple[str, list[dict]]:
    """A real user's latest events in another scenario (a source platform the model may not
    serve), as API history events given by item text: (pseudonymous user id, events)."""
    from interest_model.data.prepared import PreparedData

    data = PreparedData(prepared)
    user, events = sample_histories(prepared, scenario, max_events=max_events, seed=seed)[0]
    items = data.table("items")
    text = dict(zip(items["item_id"], items["text"]))
    return user, [{"text": text[e["item_id"]], "event_type": e["event_type"], "timestamp": e["timestamp"]}
                  for e in events if e["item_id"] in text]


def _title(text: str) -> str:
    return text.split(";")[0].removeprefix("Title: ")


def demo(client: InterestClient, prepared: str, scenario: str, out=print, source: str | None = None) -> dict:
    """Real requests: a user of a source platform and what the model recommends for them in the
    target scenario with the reasons, a target user's recommendations, a brand-new item added
    by text and found, and a request with no history. Returns the answers."""
    from interest_model.data.prepared import PreparedData

    answers: dict[str, Any] = {"model": client.model()}
    out(f"model {answers['model']['model']}: {answers['model']['catalog_items']} items in "
        f"{', '.join(answers['model']['scenarios'])}, {answers['model']['index']} search")
    source = source or next((s for s in PreparedData(prepared).scenarios_of("source") if s != scenario), None)
    if source is not None:
        user, history = source_history(prepared, source, max_events=20)
        why = answers["source_user"] = client.interests(history, scenario=scenario, k=5)
        out(f"\nuser {user[:8]}... of {source} (never seen on {scenario}), their latest movies there:")
        out("  " + "; ".join(_title(h["text"]) for h in history[-6:]))
        out(f"recommended on {scenario}, and why:")
        for it in why["explanation"]["recommendations"]:
            out(f"  {it['score']:6.2f}  {it['title'] or it['item_id']:<40} because of {_title(it['because'])}")
        out(f"their interests on {scenario} (the chance their next movie is one; * predicted): "
            + ", ".join(f"{c['category']} {c['weight']:.2f}{'*' if c['predicted'] else ''}"
                        for c in why["top_categories"]))
    user, history = sample_histories(prepared, scenario)[0]
    rec = answers["recommend"] = client.recommend(history, scenario=scenario, k=5, user_id=user)
    out(f"\nuser {user[:8]}... of {scenario}, {len(history)} movies, latest: "
        + "; ".join(h["item_id"] for h in history[-3:]))
    for it in rec["items"]:
        out(f"  {it['score']:6.2f}  {it['title'] or it['item_id']}")
    new = {"item_id": "midnight robots (2026)", "title": "Midnight Robots",
           "text": "Title: Midnight Robots; Year: 2026; Genres: Animation, Children's, Sci-Fi",
           "categories": ["Animation", "Children's", "Sci-Fi"], "scenarios": [scenario]}
    answers["items"] = client.add_items([new])
    out(f"\nadded {new['title']!r} (2026) by its text alone: {answers['items']['items'][0]['status']}")
    fan = [{"text": "Title: Toy Story; Year: 1995; Genres: Animation, Children's, Comedy"},
           {"text": "Title: Aladdin; Year: 1992; Genres: Animation, Children's, Comedy, Musical"}]
    ranked = answers["after_add"] = client.recommend(fan, scenario=scenario, k=1000,
                                                     filter={"categories": ["Animation"]})
    ids = [it["item_id"] for it in ranked["items"]]
    where = f"ranks {ids.index(new['item_id']) + 1} of" if new["item_id"] in ids else "is missing from"
    out(f"for a fan of Toy Story and Aladdin it {where} the {len(ids)} Animation movies; top 3:")
    for it in ranked["items"][:3]:
        out(f"  {it['score']:6.2f}  {it['title'] or it['item_id']}")
    cold = answers["cold"] = client.recommend([], scenario=scenario, k=3)
    out(f"\nno history ({cold['fallback']}): " + "; ".join(it["title"] or it["item_id"] for it in cold["items"]))
    return answers


if __name__ == "__main__":  # python -m serving.client URL PREPARED SCENARIO
    import sys

    print(json.dumps(demo(InterestClient(sys.argv[1]), sys.argv[2], sys.argv[3], out=lambda *_: None), indent=2))
