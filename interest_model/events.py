"""Event types of the canonical schema (a light module: the exported model imports it)."""

EVENT_TYPES = ("view", "click", "purchase", "rate", "search")
