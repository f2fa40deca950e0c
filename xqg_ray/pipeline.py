"""The library entry point the CLI and ``jobs/*.py`` call (kept for its import path): see :mod:`xqg_ray.flows`."""

from __future__ import annotations

from .flows import prepare, run
from .runtime.cluster import init_ray

__all__ = ["run", "prepare", "init_ray"]
