"""Request and response bodies of the HTTP API (validated by pydantic, published as OpenAPI).

Requests are TypedDicts: validated from the raw JSON straight into the plain dicts the online
model reads (``interest_model/online``), with no model objects to build and dump on the way
(faster, parsing included: docs/serving_speed.md). A field a request leaves
out stays out; its documented default is what the online model assumes. Text that is not valid
Unicode (a lone surrogate, which JSON can spell) is refused by the JSON parser
(``serving/bodies.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from typing_extensions import NotRequired, TypedDict

from interest_model.events import EVENT_TYPES
from interest_model.online.requests import DEFAULT_EVENT, DEFAULT_EXCLUDE_SEEN, DEFAULT_K, DEFAULT_TOP_CATEGORIES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


def _default(value, description: str | None = None):
    """A field's documented default: what the model assumes when a request leaves it out
    (``interest_model/online/requests.py``); request bodies are read as they came, not filled in."""
    return {"json_schema_extra": {"default": value}, **({"description": description} if description else {})}


FORBID = ConfigDict(extra="forbid")  # request bodies: unknown fields are client errors


def _one_item(event: dict) -> dict:
    if (event.get("item_id") is None) == (event.get("text") is None):
        raise ValueError("give exactly one of item_id or text")
    return event


class HistoryEvent(TypedDict):
    """One interaction: a catalog item by id, or any item by its text."""

    __pydantic_config__ = FORBID
    item_id: NotRequired[Annotated[str | None, Field(min_length=1, max_length=512)]]
    text: NotRequired[Annotated[str | None, Field(min_length=1, max_length=4096)]]
    scenario: NotRequired[Annotated[str | None, Field(max_length=128,
                                                      description="where it happened, when the model knows it")]]
    event_type: NotRequired[Annotated[EventType, Field(**_default(DEFAULT_EVENT))]]
    timestamp: NotRequired[Annotated[float | None, Field(ge=0, description="seconds since the epoch; orders the history")]]


class ItemFilter(TypedDict):
    __pydantic_config__ = FORBID
    categories: NotRequired[Annotated[list[str] | None, Field(max_length=100, description="keep items with any of these")]]
    exclude_categories: NotRequired[Annotated[list[str] | None, Field(max_length=100)]]


class RecommendRequest(TypedDict):
    __pydantic_config__ = FORBID
    user_id: NotRequired[Annotated[str | None, Field(max_length=256, description="logged only as a keyed hash")]]
    history: NotRequired[Annotated[list[Annotated[HistoryEvent, AfterValidator(_one_item)]], Field(
        max_length=1000, **_default([], "oldest first (or ordered by timestamp when all have one)"))]]
    scenario: NotRequired[Annotated[str | None, Field(max_length=128,
                                                      description="target scenario (default: the model's first)")]]
    k: NotRequired[Annotated[int, Field(ge=1, le=1000, **_default(DEFAULT_K))]]
    exclude_seen: NotRequired[Annotated[bool, Field(**_default(DEFAULT_EXCLUDE_SEEN))]]
    filter: NotRequired[ItemFilter | None]


class InterestsRequest(RecommendRequest):
    top_categories: NotRequired[Annotated[int, Field(ge=1, le=50, **_default(DEFAULT_TOP_CATEGORIES))]]


class ScoredItem(BaseModel):
    item_id: str
    title: str | None
    score: float
    categories: list[str]


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    fallback: Literal["popular", "catalog_order"] | None = Field(
        None, description="set when the history was empty: the scenario's popular items")
    model: str
    request_id: str


class CategoryWeight(BaseModel):
    category: str
    weight: float = Field(description="the probability that the user's next event is on an item of this category "
                                      "(categories overlap: the weights need not sum to 1)")
    predicted: bool = Field(description="at or above the model's cut-off (chosen on validation): part of the "
                                        "user's predicted interests")


class HistoryContribution(BaseModel):
    position: int
    item_id: str | None
    text: str | None
    title: str | None
    contribution: float = Field(description="mean score drop of the top-k items without this event")
    share: float = Field(description="share of the positive contributions")


class ExplainedItem(ScoredItem):
    because: str = Field(description="the history item that contributed most to this one")


class Explanation(BaseModel):
    method: str
    history: list[HistoryContribution]
    recommendations: list[ExplainedItem]


class InterestsResponse(BaseModel):
    interest_vector: list[float]
    top_categories: list[CategoryWeight] = Field(description="most likely first; empty, with a note, when the "
                                                             "catalog has no categories")
    categories_note: str | None = None
    explanation: Explanation
    model: str
    request_id: str


class NewItem(TypedDict):
    __pydantic_config__ = FORBID
    item_id: Annotated[str, Field(min_length=1, max_length=512)]
    text: Annotated[str, Field(min_length=1, max_length=4096, description="embedded by the model's text encoder")]
    title: NotRequired[Annotated[str | None, Field(max_length=1024)]]
    categories: NotRequired[Annotated[list[str], Field(max_length=100, **_default([]))]]
    scenarios: NotRequired[Annotated[list[str] | None, Field(
        max_length=100, description="default: every scenario of the model")]]


class ItemsRequest(TypedDict):
    __pydantic_config__ = FORBID
    items: Annotated[list[NewItem], Field(min_length=1, max_length=1000)]


class ItemStatus(BaseModel):
    item_id: str
    status: Literal["created", "updated"]
    scenarios: list[str]


class ItemsResponse(BaseModel):
    items: list[ItemStatus]
    model: str
    request_id: str


class ErrorResponse(BaseModel):
    detail: str | list
    unknown_item_ids: list[str] | None = None
