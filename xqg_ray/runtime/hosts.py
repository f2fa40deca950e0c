"""The model host: a long-lived actor process of the local cluster that runs one stage's unit runner at a time.

On the private local cluster each stage's fresh actor processes were most of a
small run's time (process start, then importing torch and transformers, again
for every stage).  A model host starts when the first stage that runs a model
asks for one, imports torch and transformers (:meth:`ModelHost.warm`), then
loads one stage's model after another; a run whose model stages are all
reused never starts one.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

# What a model host imports before its first stage: the bulk of a model actor's start-up.
HEAVY_IMPORTS = ("torch", "transformers", "transformers.modeling_utils")


class ModelHost:
    """Runs one unit runner (a :class:`~xqg_ray.runtime.units.UnitRunner`) at a time.

    It takes no logical CPUs: the driver gives it one unit at a time and never
    starts more hosts than a stage's ``max_actors``, so it never holds CPUs
    that index or search tasks wait for while it is idle between stages.
    """

    def __init__(self) -> None:
        self.runner: Optional[Any] = None
        # Seconds spent importing HEAVY_IMPORTS, not yet reported: counted once, as
        # the next runner's model loading.
        self.warm_seconds = 0.0

    def warm(self) -> None:
        import gc

        t0 = time.perf_counter()
        for name in HEAVY_IMPORTS:
            __import__(name)
        # What the imports made (~400k objects) lives as long as the process: out of the collector's
        # sight, each release's gc.collect() scans only what came after (the stages' models, whose
        # cycles it still frees): 0.17 s -> 0.01 s a collection with tiny-t5 loaded, measured; a host
        # collects at every stage's setup and release, about a third of its time on a small run.
        gc.freeze()
        self.warm_seconds += time.perf_counter() - t0

    def setup(self, cls: type, ctor: Dict[str, Any]) -> None:
        self.release()
        self.runner = cls(**ctor)
        self.runner.add_load_seconds(self.warm_seconds)
        self.warm_seconds = 0.0

    def run(self, unit: str) -> str:
        assert self.runner is not None
        return self.runner.run_json(unit)

    def call(self, fn: Any, args: tuple) -> Any:
        """``fn(*args)`` in this process: a model task (e.g. the round trip's encoder) that finds torch
        and transformers already imported, instead of a fresh worker importing them again (~4 CPU-s)."""
        self.release()
        return fn(*args)

    def release(self) -> None:
        """Drop the stage's model (its memory goes back before the next stage loads its own)."""
        import gc

        self.runner = None
        gc.collect()


__all__ = ["HEAVY_IMPORTS", "ModelHost"]
