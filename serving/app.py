"""The Ray Serve application: one deployment, a FastAPI ingress that holds the model.

    InterestApi   validation, auth, size limit, request ids, latency metric, error mapping; and
                  one registry model version: batched user encoding (serving/batcher.py) +
                  retrieval over the live catalog (exact or HNSW), items added by text, explanations

One hop: a request goes from the proxy (HAProxy: SERVE_ENV in ray_jobs/serve.py) straight to the
replica that answers it. Splitting the ingress from the model cost a second hop between
deployments, which on 2 cores took more CPU per request than the model itself
(docs/serving_speed.md). The model's work (encoding, scoring, explanations, items added) runs in a
worker thread, except a recommend batch that is one call of the compiled ranker: that call keeps
the GIL from start to end, so in a thread it would stall the event loop as long and add GIL
hand-overs, which cost CPU per request under load (``compiled_batches_on_loop``).
POST /v1/recommend, the hot route, is a plain Starlette route ahead of FastAPI's (``hot_recommend``):
FastAPI's per-request machinery cost more of the replica's CPU than the answer's own Python.

Import path ``serving.app:app`` (built from ``ServeConfig.from_env()``); ``serve build
serving.app:app`` wrote ``serving/serve_config.yaml`` from it; ``interest serve`` runs that file
locally and ``serve deploy serving/serve_config.yaml`` deploys it on a running cluster.
"""


import asyncio
import gc
import hmac
import importlib
import logging
import os
import time
from types import SimpleNamespace

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from interest_model.online.errors import RequestError
from interest_model.online.requests import DEFAULT_TOP_CATEGORIES, k_of
from serving import bodies, schemas
from serving.batcher import Batcher
from serving.config import ServeConfig

log = logging.getLogger("ray.serve")  # Serve adds replica and request ids to these records

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ROUTES = {"/v1/recommend", "/v1/interests", "/v1/items", "/v1/model", "/healthz"}


def resolve_model(cfg: ServeConfig) -> tuple[str, str, str | None]:
    """(local model directory, version label, item store) of the configured model."""
    from interest_model import registry

    if cfg.model_dir:
        path = os.path.abspath(cfg.model_dir)
        return path, os.path.basename(path), cfg.item_store or f"{path}.items"
    got = registry.checkout(cfg.registry, cfg.model, cfg.item_store)
    return got.model_dir, got.label, got.item_store


api = FastAPI(
    title="Interest transfer",
    version="1",
    description="User interests and recommendations from a model trained across scenarios. "
                "Histories may name catalog items by id or any item by its text.",
)


# The ingress replica's settings, read by the middleware, the auth check and the hot route. Set through the
# imported module: Serve pickles the deployment class by value, so its view of this module's
# globals would be a copy.
SETTINGS = SimpleNamespace(token=None, max_body_bytes=1 << 20, latency=None, batcher=None, recommend=None)
EXPECTED = "interest.batched"  # scope key: a recommend request the batcher expects (until it submits)


class DeferredHistogram:
    """A Serve histogram recorded off the request path: each answer appends its (route, status,
    ms), and a task on the replica's event loop records them every ``FLUSH_S``, as Serve does
    with its own per-request metrics. Recording one value while requests are in flight was a
    visible share of the replica's CPU per request (py-spy; docs/serving_speed.md)."""

    FLUSH_S = 0.5

    def __init__(self, histogram):
        self.histogram = histogram
        self.pending: list[tuple[str, int, float]] = []
        self.task: asyncio.Task | None = None

    def add(self, route: str, status: int, ms: float) -> None:
        self.pending.append((route, status, ms))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for route, status, ms in pending:
            self.histogram.observe(ms, tags={"route": route, "status": str(status)})


class Limits:
    """Pure ASGI middleware: body size limit (413) and request latency metric per route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = SETTINGS
        limit = state.max_body_bytes
        started = time.perf_counter()
        status = {"code": 500}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        batcher = state.batcher
        if batcher is not None and scope.get("path", "").endswith("/v1/recommend"):  # any route prefix
            batcher.expect()  # a batch forming now waits for it (while it is parsed and validated)
            scope[EXPECTED] = True
        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                response = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
                return await response(scope, receive, send_tracked)
            received = 0

            async def limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise StarletteHTTPException(413, f"request body over {limit} bytes")
                return message

            await self.app(scope, limited, send_tracked)
        finally:
            if scope.pop(EXPECTED, False):
                batcher.unexpect()  # refused before it reached the batcher
            if state.latency is not None:
                route = scope.get("path", "")
                state.latency.add(route if route in ROUTES else "other", status["code"],
                                  (time.perf_counter() - started) * 1000)


api.add_middleware(Limits)


async def authorized(request: Request) -> None:  # async: FastAPI runs a sync dependency in a thread
    token = SETTINGS.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def _report_compiled(compiled: bool, status: str) -> None:
    """The ranker's compilation ended (Serve's log: the reason reaches the replica's file)."""
    if compiled:
        log.info("user encoder %s: the replica now runs it compiled", status)
    else:
        log.warning("compile_encoder is on but the model runs %s", status)


def request_id(request: Request) -> str:
    return request.headers.get("x-request-id", "")


MAX_ERROR_TEXT = 200  # characters of any one string in an error body
MAX_ERROR_ITEMS = 10  # entries of any one list in an error body (so a body stays a few KB)


def bounded(value):
    """An error body that cannot grow with the request: strings clipped, lists cut, and no
    text a JSON encoder could choke on (lone surrogates are replaced)."""
    if isinstance(value, str):
        text = value if len(value) <= MAX_ERROR_TEXT else value[:MAX_ERROR_TEXT] + f"... ({len(value):,} chars)"
        return text.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (list, tuple)):  # the first entries (e.g. unknown_item_ids: the first 10)
        return [bounded(v) for v in value[:MAX_ERROR_ITEMS]]
    if isinstance(value, dict):
        return {bounded(str(k)): bounded(v) for k, v in list(value.items())[:MAX_ERROR_ITEMS]}
    return value if value is None or isinstance(value, (bool, int, float)) else bounded(str(value))


@api.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each problem (where, what, which rule) without echoing the input back."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse({"detail": bounded(errors)}, status_code=422)


@api.exception_handler(RequestError)
async def unanswerable(request: Request, exc: RequestError) -> JSONResponse:
    """A request the model cannot answer (raised in the model replica): its status and detail."""
    return JSONResponse(bounded(exc.body()), status_code=exc.status)


# The POST routes below read their bodies themselves (serving/bodies.py); the spec still shows
# them. Set before the class: `serve.ingress` freezes a copy of `api` when it decorates it.
bodies.documented(api, {"/v1/recommend": schemas.RecommendRequest, "/v1/interests": schemas.InterestsRequest,
                        "/v1/items": schemas.ItemsRequest})

ERRORS = {401: {"model": schemas.ErrorResponse}, 413: {"model": schemas.ErrorResponse},
          422: {"model": schemas.ErrorResponse}}


async def hot_recommend(request: Request):
    """POST /v1/recommend as a plain Starlette route, ahead of FastAPI's routes: it calls the
    replica's ``InterestApi.recommend`` (the one implementation; its FastAPI route, behind this
    one, is what the OpenAPI spec shows). FastAPI's request handling (dependency solving, its
    exit stacks, the response-model check) cost more of the replica's CPU per request under
    load than the answer's own Python (docs/serving_speed.md); the middleware,
    the exception handlers (401, 413, 422, a RequestError's status) and the 405 for another
    method are the app's, as for any route."""
    recommend = SETTINGS.recommend
    if recommend is None:
        raise RuntimeError("no InterestApi replica in this process")
    return await recommend(request)


# The spec and Serve's ingress take FastAPI's routes as they are; this one only comes first (Serve
# appends the class's routes after the app's own).
api.router.routes.insert(0, Route("/v1/recommend", hot_recommend, methods=["POST"]))


@serve.deployment
@serve.ingress(api)
class InterestApi:
    """One model version behind the HTTP API; user encoding is batched across concurrent requests."""

    def __init__(self, cfg: ServeConfig):
        import torch

        from interest_model.data.validate import Pseudonymizer
        from interest_model.online import OnlineModel

        torch.set_num_threads(max(1, round(cfg.replica_cpus)))
        gc.set_threshold(cfg.gc_threshold, *gc.get_threshold()[1:])
        model_dir, label, store = resolve_model(cfg)
        if store is None:
            log.warning("no item_store for a remote registry: items added by text live only in this replica")
        self.online = OnlineModel(model_dir, item_store=store, label=label, exact_max_items=cfg.exact_search_max_items,
                                  hnsw_m=cfg.hnsw_m, ef_search=cfg.hnsw_ef_search, max_history=cfg.max_history,
                                  compile_encoder=cfg.compile_encoder, index_cache_dir=cfg.index_cache_dir,
                                  compile_in_background=cfg.compile_in_background, on_compiled=_report_compiled)
        if self.online.index.build_source is not None:
            log.info("item index: %s items, HNSW graph %s", f"{self.online.num_items:,}", self.online.index.build_source)
        self.store = store
        batch_size = metrics.Histogram("interest_batch_size", description="requests per user-encoding batch",
                                       boundaries=BATCH_BOUNDARIES)
        self.batcher = Batcher(self.online.recommend_batch, cfg.max_batch_size, cfg.batch_wait_timeout_s,
                               on_batch=batch_size.observe,
                               on_loop=self.online.one_compiled_call if cfg.compiled_batches_on_loop else None)
        self.pseudonymize = Pseudonymizer(cfg.pseudonymize.resolve_key(), cfg.pseudonymize.digest_chars)
        self.log_requests = cfg.log_requests
        settings = importlib.import_module("serving.app").SETTINGS
        settings.token = os.environ.get(cfg.auth_token_env) or None
        settings.max_body_bytes = cfg.max_body_bytes
        settings.batcher = self.batcher
        settings.recommend = self.recommend
        settings.latency = DeferredHistogram(metrics.Histogram(
            "interest_request_latency_ms", description="HTTP request latency at the ingress",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route", "status")))
        log.info("serving %s from %s: %d items, %s search, model %s; auth %s, body limit %d bytes, GC threshold %d",
                 label, model_dir, self.online.num_items, self.online.index.kind, self.online.encoder_status,
                 "on" if settings.token else "off", cfg.max_body_bytes, cfg.gc_threshold)

    def _log(self, request: Request, route: str, body: dict, extra: str = "") -> None:
        if not self.log_requests:
            return
        user = self.pseudonymize(body["user_id"]) if body.get("user_id") else "-"
        log.info("%s request_id=%s user=%s history=%d %s", route, request_id(request), user,
                 len(body.get("history") or []), extra)

    @api.get("/healthz", tags=["ops"])
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/model", tags=["ops"], dependencies=[Depends(authorized)], responses=ERRORS)
    async def model_info(self) -> dict:
        await asyncio.to_thread(self.online.refresh)
        return {**self.online.info(), "item_store": self.store}

    @api.post("/v1/recommend", response_model=schemas.RecommendResponse, responses=ERRORS, tags=["recommend"])
    async def recommend(self, request: Request):
        """Served through ``hot_recommend`` (above); no FastAPI dependency, so it checks the token itself."""
        await authorized(request)
        body = await bodies.body(request, schemas.RecommendRequest)
        self._log(request, "recommend", body, f"k={k_of(body)}")
        out, batch = await self.batcher.submit(body, expected=request.scope.pop(EXPECTED, False))
        if isinstance(out, Exception):
            raise out  # a RequestError: its 4xx (the handler above)
        # the model's answer already has the response's shape: no second validation on the hot path
        answer = {"items": out["items"], "fallback": out["fallback"], "model": self.online.label,
                  "request_id": request_id(request)}
        return bodies.answer(answer, headers={"x-batch-size": str(batch)})

    @api.post("/v1/interests", response_model=schemas.InterestsResponse, responses=ERRORS,
              dependencies=[Depends(authorized)], tags=["recommend"])
    async def interests(self, request: Request):
        body = await bodies.body(request, schemas.InterestsRequest)
        self._log(request, "interests", body)
        out = await asyncio.to_thread(self.online.interests, body,
                                      body.get("top_categories", DEFAULT_TOP_CATEGORIES))
        return {**out, "model": self.online.label, "request_id": request_id(request)}

    @api.post("/v1/items", response_model=schemas.ItemsResponse, responses={**ERRORS, 409: {"model": schemas.ErrorResponse}},
              dependencies=[Depends(authorized)], tags=["catalog"])
    async def add_items(self, request: Request):
        body = await bodies.body(request, schemas.ItemsRequest)
        if self.log_requests:
            log.info("items request_id=%s count=%d", request_id(request), len(body["items"]))
        added = await asyncio.to_thread(self.online.add_items, body["items"])
        return {"items": added, "model": self.online.label, "request_id": request_id(request)}


def build_app(cfg: ServeConfig):
    if cfg.max_ongoing_requests < cfg.max_batch_size:
        raise ValueError("max_ongoing_requests must be at least max_batch_size, or batches never fill")
    return InterestApi.options(
        autoscaling_config=cfg.autoscaling.model_dump(),
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
    ).bind(cfg)


app = build_app(ServeConfig.from_env())
