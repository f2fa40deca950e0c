"""One-line JSON progress events in job logs, and per-stage throughput."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Dict, Iterator


class StageTimer:
    """Records rows and wall time per stage and prints one JSON line per event."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.stages: Dict[str, Dict[str, float]] = {}

    def event(self, stage: str, event: str, **fields) -> None:
        print(json.dumps({"xqg": stage, "event": event, **fields}, ensure_ascii=False), file=self.stream, flush=True)

    def record(self, name: str, rows: int, seconds: float, reused: bool) -> None:
        """A stage that ran inside another one's pass (e.g. test questions inside the encode pass)."""
        self.stages[name] = {"rows": int(rows), "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 2) if seconds > 0 and not reused else None, "reused": reused}
        self.event(name, "done", **self.stages[name])

    @contextmanager
    def stage(self, name: str) -> Iterator[Dict]:
        """``with timer.stage("encode") as s: ...; s["rows"] = n``."""
        rec: Dict = {"rows": 0, "reused": False}
        self.event(name, "start")
        t0 = time.perf_counter()
        yield rec
        secs = time.perf_counter() - t0
        rows = int(rec.get("rows", 0))
        out = {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs, 2) if secs > 0 and not rec.get("reused") else None, "reused": bool(rec.get("reused"))}
        self.stages[name] = out
        self.event(name, "done", **out)
