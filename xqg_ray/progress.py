"""One-line JSON progress events in job logs, and per-stage throughput and model time."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator


class StageTimer:
    """Records rows, wall time, model loading and model work per stage; prints one JSON line per event.

    ``load_seconds`` and ``work_seconds`` are the sums over a stage's ``unit``
    events (actor constructors and unit calls, see ``runtime.units.UnitRunner``):
    with one actor they are the stage's model time, and ``seconds`` minus them
    is its fixed cost (actor start-up, scheduling, the driver's own work).
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.stages: Dict[str, Dict[str, Any]] = {}
        self._model: Dict[str, Dict[str, float]] = {}

    def event(self, stage: str, event: str, **fields) -> None:
        if event == "unit":
            m = self._model.setdefault(stage, {"load_seconds": 0.0, "work_seconds": 0.0})
            for key in m:
                m[key] += float(fields.get(key) or 0.0)
        print(json.dumps({"xqg": stage, "event": event, **fields}, ensure_ascii=False), file=self.stream, flush=True)

    def _row(self, name: str, rows: int, seconds: float, reused: bool) -> Dict[str, Any]:
        m = self._model.get(name, {"load_seconds": 0.0, "work_seconds": 0.0})
        return {"rows": int(rows), "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 2) if seconds > 0 and not reused else None,
                "reused": bool(reused), "load_seconds": round(m["load_seconds"], 3), "work_seconds": round(m["work_seconds"], 3)}

    def record(self, name: str, rows: int, seconds: float, reused: bool) -> None:
        """A stage that ran inside another one's pass (e.g. test questions inside the encode pass)."""
        self.stages[name] = self._row(name, rows, seconds, reused)
        self.event(name, "done", **self.stages[name])

    @contextmanager
    def stage(self, name: str) -> Iterator[Dict]:
        """``with timer.stage("encode") as s: ...; s["rows"] = n``."""
        rec: Dict = {"rows": 0, "reused": False}
        self.event(name, "start")
        t0 = time.perf_counter()
        yield rec
        secs = time.perf_counter() - t0
        self.stages[name] = self._row(name, int(rec.get("rows", 0)), secs, bool(rec.get("reused")))
        self.event(name, "done", **self.stages[name])
