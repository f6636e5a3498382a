"""Request and response bodies of the HTTP API (validated by pydantic, published as OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from interest_model.events import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Id = Field(min_length=1, max_length=512)


class Strict(BaseModel):
    """Request bodies: unknown fields are client errors. Text that is not valid Unicode (a lone
    surrogate, which JSON can spell) is refused by the JSON parser (``serving/bodies.py``)."""

    model_config = ConfigDict(extra="forbid")


class HistoryEvent(Strict):
    """One interaction: a catalog item by id, or any item by its text."""

    item_id: str | None = Field(None, min_length=1, max_length=512)
    text: str | None = Field(None, min_length=1, max_length=4096)
    scenario: str | None = Field(None, max_length=128, description="where it happened, when the model knows it")
    event_type: EventType = "rate"
    timestamp: float | None = Field(None, ge=0, description="seconds since the epoch; orders the history")

    @model_validator(mode="after")
    def _one_item(self):
        if (self.item_id is None) == (self.text is None):
            raise ValueError("give exactly one of item_id or text")
        return self


class ItemFilter(Strict):
    categories: list[str] | None = Field(None, max_length=100, description="keep items with any of these")
    exclude_categories: list[str] | None = Field(None, max_length=100)


class RecommendRequest(Strict):
    user_id: str | None = Field(None, max_length=256, description="logged only as a keyed hash")
    history: list[HistoryEvent] = Field(default_factory=list, max_length=1000,
                                        description="oldest first (or ordered by timestamp when all have one)")
    scenario: str | None = Field(None, max_length=128, description="target scenario (default: the model's first)")
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    filter: ItemFilter | None = None


class InterestsRequest(RecommendRequest):
    top_categories: int = Field(5, ge=1, le=50)


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
    weight: float


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
    top_categories: list[CategoryWeight]
    explanation: Explanation
    model: str
    request_id: str


class NewItem(Strict):
    item_id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, max_length=4096, description="embedded by the model's text encoder")
    title: str | None = Field(None, max_length=1024)
    categories: list[str] = Field(default_factory=list, max_length=100)
    scenarios: list[str] | None = Field(None, max_length=100, description="default: every scenario of the model")


class ItemsRequest(Strict):
    items: list[NewItem] = Field(min_length=1, max_length=1000)


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
