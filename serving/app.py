"""The Ray Serve application: a FastAPI ingress in front of the model deployment.

    Api (FastAPI ingress)  validation, auth, size limit, request ids, latency metric, error mapping
      -> ModelServer       a registry model version: @serve.batch user encoding + retrieval over
                           the live catalog (exact or HNSW), items added by text, explanations

Import path ``serving.app:app`` (built from ``ServeConfig.from_env()``); ``serve build
serving.app:app`` wrote ``serving/serve_config.yaml`` from it; ``interest serve`` runs that file
locally and ``serve deploy serving/serve_config.yaml`` deploys it on a running cluster.
"""


import asyncio
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
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve import metrics
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from interest_model import io
from interest_model.online.errors import RequestError
from serving import schemas
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
    name, _ = registry.parse_ref(cfg.model)
    uri, version = registry.resolve(cfg.registry, cfg.model)
    local = registry.local_model_dir(cfg.registry, f"{name}:{version}")
    store = cfg.item_store
    if store is None and not io.is_remote(cfg.registry):
        store = os.path.join(os.path.abspath(cfg.registry), name, "items")
    return local, f"{name}:{version}", store


@serve.deployment
class ModelServer:
    """One model version; user encoding is batched across concurrent requests."""

    def __init__(self, cfg: ServeConfig):
        import torch

        from interest_model.online import OnlineModel

        torch.set_num_threads(max(1, round(cfg.model_cpus)))
        model_dir, label, store = resolve_model(cfg)
        if store is None:
            log.warning("no item_store for a remote registry: items added by text live only in this replica")
        self.online = OnlineModel(model_dir, item_store=store, label=label, exact_max_items=cfg.exact_search_max_items,
                                  hnsw_m=cfg.hnsw_m, ef_search=cfg.hnsw_ef_search, max_history=cfg.max_history)
        self.store = store
        self._recommend_batch.set_max_batch_size(cfg.max_batch_size)
        self._recommend_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.batch_size = metrics.Histogram("interest_batch_size", description="requests per user-encoding batch",
                                            boundaries=BATCH_BOUNDARIES)
        log.info("serving %s from %s: %d items, %s search", label, model_dir, self.online.num_items,
                 self.online.index.kind)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _recommend_batch(self, queries: list[dict]) -> list:
        self.batch_size.observe(len(queries))
        answers = await asyncio.to_thread(self.online.recommend_batch, queries)
        return [a if isinstance(a, Exception) else {**a, "batch_size": len(queries), "model": self.online.label}
                for a in answers]

    async def recommend(self, query: dict) -> dict:
        """One request's answer, encoded in a batch with concurrent ones; a request the model
        cannot answer raises its RequestError (the ingress turns it into a 4xx)."""
        out = await self._recommend_batch(query)
        if isinstance(out, Exception):
            raise out
        return out

    async def interests(self, query: dict) -> dict:
        out = await asyncio.to_thread(self.online.interests, query, query.get("top_categories", 5))
        return {**out, "model": self.online.label}

    async def add_items(self, items: list[dict]) -> dict:
        return {"items": await asyncio.to_thread(self.online.add_items, items), "model": self.online.label}

    async def info(self) -> dict:
        await asyncio.to_thread(self.online.refresh)
        return {**self.online.info(), "item_store": self.store}


api = FastAPI(
    title="Interest transfer",
    version="1",
    description="User interests and recommendations from a model trained across scenarios. "
                "Histories may name catalog items by id or any item by its text.",
)


# The ingress replica's settings, read by the middleware and the auth dependency. Set through the
# imported module: Serve pickles the deployment class by value, so its view of this module's
# globals would be a copy.
SETTINGS = SimpleNamespace(token=None, max_body_bytes=1 << 20, latency=None)


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
            latency = state.latency
            if latency is not None:
                route = scope.get("path", "")
                latency.observe((time.perf_counter() - started) * 1000,
                                tags={"route": route if route in ROUTES else "other", "status": str(status["code"])})


api.add_middleware(Limits)


def authorized(request: Request) -> None:
    token = SETTINGS.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


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


ERRORS = {401: {"model": schemas.ErrorResponse}, 413: {"model": schemas.ErrorResponse},
          422: {"model": schemas.ErrorResponse}, 503: {"model": schemas.ErrorResponse}}

# A model replica that dies (killed, out of memory, its node lost) fails the requests it holds;
# Serve starts another. Every model call is safe to repeat (recommend and interests read, adding
# items is an upsert by id), so the ingress repeats it until a replica answers, within a bound.
REPLICA_LOST = (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError)
REPLICA_WAIT_S = 60.0


async def call_model(method, *args):
    """``await method.remote(*args)``, repeated while the model replica is being replaced."""
    deadline, pause = time.monotonic() + REPLICA_WAIT_S, 0.1
    while True:
        try:
            return await method.remote(*args)
        except REPLICA_LOST as exc:
            if time.monotonic() + pause > deadline:
                raise HTTPException(503, "the model is restarting; retry shortly", headers={"Retry-After": "5"}) from exc
            log.warning("model replica unavailable (%s); retrying in %.1fs", type(exc).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(2.0, pause * 2)


@serve.deployment
@serve.ingress(api)
class Api:
    def __init__(self, model: DeploymentHandle, cfg: ServeConfig):
        from interest_model.data.validate import Pseudonymizer

        self.model = model
        self.pseudonymize = Pseudonymizer(cfg.pseudonymize.resolve_key(), cfg.pseudonymize.digest_chars)
        settings = importlib.import_module("serving.app").SETTINGS
        settings.token = os.environ.get(cfg.auth_token_env) or None
        settings.max_body_bytes = cfg.max_body_bytes
        settings.latency = metrics.Histogram(
            "interest_request_latency_ms", description="HTTP request latency at the ingress",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route", "status"))
        log.info("ingress up: auth %s, body limit %d bytes", "on" if settings.token else "off", cfg.max_body_bytes)

    def _log(self, request: Request, route: str, body, extra: str = "") -> None:
        user = self.pseudonymize(body.user_id) if getattr(body, "user_id", None) else "-"
        log.info("%s request_id=%s user=%s history=%d %s", route, request_id(request), user,
                 len(getattr(body, "history", []) or []), extra)

    @api.get("/healthz", tags=["ops"])
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/model", tags=["ops"], dependencies=[Depends(authorized)], responses=ERRORS)
    async def model_info(self) -> dict:
        return await call_model(self.model.info)

    @api.post("/v1/recommend", response_model=schemas.RecommendResponse, responses=ERRORS,
              dependencies=[Depends(authorized)], tags=["recommend"])
    async def recommend(self, body: schemas.RecommendRequest, request: Request):
        self._log(request, "recommend", body, f"k={body.k}")
        out = await call_model(self.model.recommend, body.model_dump())
        body = schemas.RecommendResponse(items=out["items"], fallback=out["fallback"], model=out["model"],
                                         request_id=request_id(request))
        return JSONResponse(body.model_dump(), headers={"x-batch-size": str(out["batch_size"])})

    @api.post("/v1/interests", response_model=schemas.InterestsResponse, responses=ERRORS,
              dependencies=[Depends(authorized)], tags=["recommend"])
    async def interests(self, body: schemas.InterestsRequest, request: Request):
        self._log(request, "interests", body)
        out = await call_model(self.model.interests, body.model_dump())
        return {**out, "request_id": request_id(request)}

    @api.post("/v1/items", response_model=schemas.ItemsResponse, responses={**ERRORS, 409: {"model": schemas.ErrorResponse}},
              dependencies=[Depends(authorized)], tags=["catalog"])
    async def add_items(self, body: schemas.ItemsRequest, request: Request):
        log.info("items request_id=%s count=%d", request_id(request), len(body.items))
        out = await call_model(self.model.add_items, [it.model_dump() for it in body.items])
        return {**out, "request_id": request_id(request)}


def build_app(cfg: ServeConfig):
    if cfg.max_ongoing_requests < cfg.max_batch_size:
        raise ValueError("max_ongoing_requests must be at least max_batch_size, or batches never fill")
    model = ModelServer.options(
        autoscaling_config=cfg.autoscaling.model_dump(),
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.model_cpus},
    ).bind(cfg)
    return Api.options(num_replicas=cfg.ingress_replicas, max_ongoing_requests=4 * cfg.max_ongoing_requests,
                       ray_actor_options={"num_cpus": cfg.ingress_cpus}).bind(model, cfg)


app = build_app(ServeConfig.from_env())
