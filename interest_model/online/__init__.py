"""Online inference over an exported model (no Ray): ``OnlineModel`` (``model.py``) over a live
catalog (``catalog.py``) shared through an item store (``store.py``), requests resolved and
rejected in ``requests.py`` (``errors.py``: :class:`RequestError`), encoded and scored in one
forward pass (``ranker.py``, compiled ahead of time where it can be), explanations in
``explain.py``. ``OnlineModel`` loads lazily, so the error type imports without torch."""

from interest_model.online.errors import RequestError

__all__ = ["ItemStore", "OnlineModel", "RequestError"]


def __getattr__(name: str):
    if name == "OnlineModel":
        from interest_model.online.model import OnlineModel

        return OnlineModel
    if name == "ItemStore":
        from interest_model.online.store import ItemStore

        return ItemStore
    raise AttributeError(name)
