"""The client error of the online model, importable without torch (the HTTP ingress maps it)."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the model cannot answer (unknown items or scenario, ...): a client error with
    its HTTP status and any structured detail (e.g. ``unknown_item_ids``)."""

    def __init__(self, detail: str, status: int = 422, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra

    def __reduce__(self):  # crosses process boundaries (a Ray Serve replica to the ingress) whole
        return (_rebuild, (self.detail, self.status, self.extra))

    def body(self) -> dict:
        return {"detail": self.detail, **self.extra}


def _rebuild(detail: str, status: int, extra: dict) -> RequestError:
    return RequestError(detail, status, **extra)
