"""Request bodies read by the routes themselves (serving/bodies.py): one pydantic pass over the
raw bytes, FastAPI-shaped 422s, and the bodies still published in the OpenAPI spec. No Ray."""

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from serving import bodies, schemas


def _errors(raw: bytes, content_type: str | None = "application/json", model=schemas.RecommendRequest) -> list[dict]:
    with pytest.raises(RequestValidationError) as info:
        bodies.parse(model, raw, content_type)
    return info.value.errors()


def test_a_valid_body_parses_into_plain_dicts_as_it_came():
    raw = json.dumps({"history": [{"item_id": "Heat (1995)", "timestamp": "12"}, {"text": "a film about heists"}],
                      "k": "3"}).encode()
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json", None):
        body = bodies.parse(schemas.RecommendRequest, raw, content_type)
        # values coerced to their types; what was left out stays out (the online model's defaults)
        assert body == {"history": [{"item_id": "Heat (1995)", "timestamp": 12.0}, {"text": "a film about heists"}],
                        "k": 3}


@pytest.mark.parametrize("raw", [b'{"history": [{"text": "\\udcff broken"}]}', b'{"user_id": "\xff"}'])
def test_text_that_is_not_unicode_is_refused_by_name(raw):
    (error,) = _errors(raw)
    assert error["loc"] == ("body",) and "not valid Unicode text" in error["msg"]


def test_problems_are_located_in_the_body_and_the_input_is_not_echoed():
    raw = json.dumps({"history": [{"item_id": "a"}, {"item_id": "z" * 600}, {"item_id": "b", "text": "t"}],
                      "k": 0, "colour": "red"}).encode()
    errors = _errors(raw)
    locs = {e["loc"] for e in errors}
    assert {("body", "history", 1, "item_id"), ("body", "history", 2), ("body", "k"), ("body", "colour")} <= locs
    assert all(set(e) == {"loc", "type", "msg"} for e in errors)
    assert "zzzz" not in json.dumps(errors)
    assert _errors(b"")[0]["type"] == "missing"
    assert _errors(b"{not json")[0]["type"] == "json_invalid"
    assert _errors(b"[1, 2]")[0]["loc"] == ("body",)
    assert "text/plain" in _errors(raw, "text/plain")[0]["msg"]


def test_answers_are_json_and_bodies_are_published_in_the_openapi_spec():
    answer = bodies.answer({"items": [{"item_id": "é", "score": 1.5}], "fallback": None}, headers={"x-batch-size": "3"})
    assert json.loads(answer.body) == {"items": [{"item_id": "é", "score": 1.5}], "fallback": None}
    assert answer.media_type == "application/json" and answer.headers["x-batch-size"] == "3"

    api = FastAPI()

    @api.post("/v1/recommend", response_model=schemas.RecommendResponse)
    async def recommend(request: Request):
        return bodies.answer(await bodies.body(request, schemas.RecommendRequest))

    bodies.documented(api, {"/v1/recommend": schemas.RecommendRequest})
    spec = api.openapi()
    assert api.openapi() is spec  # built once
    ref = spec["paths"]["/v1/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/RecommendRequest"
    components = spec["components"]["schemas"]
    assert {"RecommendRequest", "HistoryEvent", "ItemFilter", "RecommendResponse"} <= set(components)
    request = components["RecommendRequest"]
    assert request["properties"]["history"]["items"]["$ref"] == "#/components/schemas/HistoryEvent"
    assert request["properties"]["k"]["default"] == 10 and request["additionalProperties"] is False
    assert components["HistoryEvent"]["properties"]["event_type"]["default"] == "rate"
