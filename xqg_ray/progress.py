"""Progress of a run: a bar a person can read on a terminal, one-line JSON events in job logs and CI;
per-stage throughput and model time.

``XQG_PROGRESS`` chooses the output: ``bar``, ``json`` or ``auto`` (the
default: a bar when the stream is a terminal, JSON lines otherwise, so a
redirected log or a CI job keeps the machine-readable lines).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

from .config.secrets import redact
from .errors import UserError

MODES = ("auto", "bar", "json")
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} units [{elapsed} elapsed, {rate_fmt}, ETA {remaining}]"


def progress_mode(stream: Any, requested: Optional[str] = None) -> str:
    """``"bar"`` or ``"json"``: ``requested`` (else ``$XQG_PROGRESS``, else auto), auto = bar on a TTY."""
    mode = (requested if requested is not None else os.environ.get("XQG_PROGRESS", "auto")).strip().lower() or "auto"
    if mode not in MODES:
        raise UserError(f"XQG_PROGRESS={mode!r}: use bar, json or auto (bar on a terminal, else JSON lines)")
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        return "bar" if isatty is not None and isatty() else "json"
    return mode


def bar_line(stage: str, done: int, of: int, elapsed: float) -> str:
    """One bar: percent, ``done/of`` units, elapsed time, rate and ETA (tqdm's formatting)."""
    from tqdm import tqdm

    return tqdm.format_meter(done, of, elapsed, prefix=stage, unit="unit", bar_format=BAR_FORMAT)


def _done_line(stage: str, fields: Dict[str, Any]) -> str:
    if fields.get("reused"):
        return f"{stage}: reused ({fields.get('rows', 0)} rows, {fields.get('seconds', 0)} s)"
    rate = fields.get("rows_per_s")
    return f"{stage}: done, {fields.get('rows', 0)} rows in {fields.get('seconds', 0)} s" + (f" ({rate} rows/s)" if rate is not None else "")


class StageTimer:
    """Records rows, wall time, model loading and model work per stage; reports each event.

    ``load_seconds`` and ``work_seconds`` are the sums over a stage's ``unit``
    events (actor constructors and unit calls, see ``runtime.units.UnitRunner``):
    with one actor they are the stage's model time, and ``seconds`` minus them
    is its fixed cost (actor start-up, scheduling, the driver's own work).

    ``mode`` is :func:`progress_mode`'s (``None``: from ``$XQG_PROGRESS`` and the
    stream).  JSON mode prints one JSON line per event; bar mode redraws one
    line per stage from its ``unit`` events (``done=``, ``of=``) and prints the
    other events as plain lines.  ``clock`` times the bar (tests fix it).
    """

    def __init__(self, stream=None, mode: Optional[str] = None, clock: Callable[[], float] = time.perf_counter):
        self.stream = stream or sys.stderr
        self.mode = progress_mode(self.stream, mode)
        self.stages: Dict[str, Dict[str, Any]] = {}
        self._model: Dict[str, Dict[str, float]] = {}
        self._clock = clock
        self._started: Dict[str, float] = {}  # stage -> clock() at its start event (bar mode)
        self._drawn = 0  # width of the bar line now on screen; 0: the cursor is at a line start

    def event(self, stage: str, event: str, **fields) -> None:
        if event == "unit":
            m = self._model.setdefault(stage, {"load_seconds": 0.0, "work_seconds": 0.0})
            for key in m:
                m[key] += float(fields.get(key) or 0.0)
        if self.mode == "json":
            # Events carry URIs and messages: a presigned token or user:password@ never reaches a log.
            print(redact(json.dumps({"xqg": stage, "event": event, **fields}, ensure_ascii=False)), file=self.stream, flush=True)
        else:
            self._bar_event(stage, event, fields)

    def _bar_event(self, stage: str, event: str, fields: Dict[str, Any]) -> None:
        now = self._clock()
        if event == "start":
            self._started[stage] = now
            self._line(f"{stage}: started")
        elif event == "unit":
            if fields.get("done") is None or not fields.get("of"):
                return  # a unit without a count (search batches): nothing to draw
            line = bar_line(stage, int(fields["done"]), int(fields["of"]), now - self._started.setdefault(stage, now))
            # \r redraws in place; spaces wipe what a longer previous line left behind.
            self.stream.write("\r" + line + " " * max(0, self._drawn - len(line)))
            self.stream.flush()
            self._drawn = len(line)
        elif event == "done":
            self._line(_done_line(stage, fields))
        else:  # warnings and any other event: one plain line
            rest = {k: v for k, v in fields.items() if k != "message"}
            text = " ".join(t for t in (str(fields.get("message", "")), json.dumps(rest, ensure_ascii=False) if rest else "") if t)
            self._line(f"{stage}: {event}" + (f": {text}" if text else ""))

    def _line(self, text: str) -> None:
        """A whole line below any bar being drawn (the bar stays as last drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self._drawn = 0
        self.stream.write(redact(text) + "\n")
        self.stream.flush()

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
