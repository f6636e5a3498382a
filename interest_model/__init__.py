"""interest_model: data schema and transforms, encoders, losses, metrics, transfer strategies and
the checkpoint format. No Ray imports anywhere in this package."""


def load_model(directory):
    """Load an exported model directory (see interest_model.checkpoint)."""
    from interest_model.checkpoint import load_model as _load

    return _load(directory)


__all__ = ["load_model"]
