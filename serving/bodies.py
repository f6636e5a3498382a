"""Request bodies in, answers out, for the API's POST routes: one pass of pydantic over the raw
bytes (into the plain dicts of ``serving/schemas.py``), one Rust call to write the answer.

FastAPI's own body handling (``body: Model`` in a route's signature) parses the JSON with
``json.loads``, then validates the Python objects, inside its dependency machinery. On the hot
route that was a visible share of the replica's event loop per request under load (py-spy;
docs/serving_speed.md), and the check that text is real Unicode (JSON can spell a
lone surrogate, which no text encoder, log or UTF-8 answer can hold) was a Python call per field
of every history event. ``model_validate_json`` parses and validates in one pass, and its parser
already refuses lone surrogates and bytes that are not UTF-8. The 422 bodies keep FastAPI's
shape (``loc`` starts with "body"), and the OpenAPI spec still documents each request body
(``documented``).
"""

from __future__ import annotations

import functools

import pydantic
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

NOT_UNICODE = ("surrogate", "unicode", "utf-8")  # what the JSON parser says of text that is not Unicode


def parse(kind: type, raw: bytes, content_type: str | None = None):
    """A request body of type ``kind`` (a TypedDict or a pydantic model) from its JSON, or
    RequestValidationError (a 422 naming each problem)."""
    if content_type and not _is_json(content_type):
        raise RequestValidationError([{"loc": ("body",), "type": "content_type",
                                       "msg": f"the body must be JSON (Content-Type: application/json), not {content_type}"}])
    if not raw.strip():
        raise RequestValidationError([{"loc": ("body",), "type": "missing", "msg": "Field required"}])
    try:
        return _adapter(kind).validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError([_error(e) for e in exc.errors(include_url=False, include_input=False)]) from None


async def body(request: Request, kind: type):
    return parse(kind, await request.body(), request.headers.get("content-type"))


def answer(content, status_code: int = 200, headers: dict | None = None) -> Response:
    """A JSON answer, written by pydantic-core (about 5x faster than ``json.dumps`` for ten
    scored items); the content must already have the route's response shape."""
    return Response(pydantic_core.to_json(content), status_code=status_code, headers=headers,
                    media_type="application/json")


def documented(api: FastAPI, bodies: dict[str, type]) -> None:
    """Publish ``bodies`` ({path: type} of POST routes that read their body with ``body``) as
    those routes' request bodies in the OpenAPI spec, as FastAPI does for a body parameter."""
    default = api.openapi

    def openapi() -> dict:
        if api.openapi_schema is not None:
            return api.openapi_schema
        spec = default()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for path, kind in bodies.items():
            schema = _adapter(kind).json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[kind.__name__] = schema
            operation = spec["paths"][path]["post"]
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{kind.__name__}"}}}}
        return spec

    api.openapi = openapi


@functools.cache
def _adapter(kind: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(kind)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _error(e: dict) -> dict:
    if e["type"] == "json_invalid" and any(w in e["msg"].lower() for w in NOT_UNICODE):
        return {"loc": ("body",), "type": "json_invalid",
                "msg": f"not valid Unicode text: {e.get('ctx', {}).get('error', e['msg'])}"}
    return {"loc": ("body", *e["loc"]), "type": e["type"], "msg": e["msg"]}
