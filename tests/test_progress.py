"""Progress output: a bar with units done, rate and ETA on a terminal; the JSON lines elsewhere, unchanged."""

from __future__ import annotations

import io
import json

import pytest

from xqg_ray.errors import UserError
from xqg_ray.progress import StageTimer, bar_line, progress_mode


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _units(timer: StageTimer, clock: Clock) -> None:
    """encode starts at t=100, finishes unit 1 of 4 at t=102 and unit 2 at t=104."""
    timer.event("encode", "start")
    for done in (1, 2):
        clock.t += 2.0
        timer.event("encode", "unit", done=done, of=4, unit=f"p{done}", computed=True, reused=False, load_seconds=0.5, work_seconds=1.0)


def test_bar_on_a_terminal_shows_units_rate_and_eta(monkeypatch):
    monkeypatch.delenv("XQG_PROGRESS", raising=False)
    out, clock = FakeTTY(), Clock()
    timer = StageTimer(out, clock=clock)
    assert timer.mode == "bar"
    _units(timer, clock)
    text = out.getvalue()
    last = text.split("\r")[-1]
    # 2 units in 4 s: 2.00 s a unit, 2 left -> 4 s to go
    assert last == "encode:  50%|██████████          | 2/4 units [00:04 elapsed,  2.00s/unit, ETA 00:04]"
    assert "2/4" in last and "ETA 00:04" in last and bar_line("encode", 2, 4, 4.0) == last
    assert text.startswith("encode: started\n\rencode:  25%|") and "\n" not in text.split("encode: started\n")[1]
    timer.event("generate/t5", "warning", message="3 query slots stayed empty")
    timer.record("encode", 8, 4.0, False)
    timer.record("encode-again", 8, 1.0, True)
    assert out.getvalue().split("\n")[2:] == [
        "generate/t5: warning: 3 query slots stayed empty",  # the bar's line is ended first
        "encode: done, 8 rows in 4.0 s (2.0 rows/s)",
        "encode-again: reused (8 rows, 1.0 s)",
        "",
    ]
    assert timer.stages["encode"]["load_seconds"] == 1.0 and timer.stages["encode"]["work_seconds"] == 2.0


def test_json_lines_off_a_terminal_are_unchanged(monkeypatch):
    monkeypatch.delenv("XQG_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    timer = StageTimer(out, clock=clock)
    assert timer.mode == "json"
    _units(timer, clock)
    assert out.getvalue() == (
        '{"xqg": "encode", "event": "start"}\n'
        '{"xqg": "encode", "event": "unit", "done": 1, "of": 4, "unit": "p1", "computed": true, "reused": false, "load_seconds": 0.5, "work_seconds": 1.0}\n'
        '{"xqg": "encode", "event": "unit", "done": 2, "of": 4, "unit": "p2", "computed": true, "reused": false, "load_seconds": 0.5, "work_seconds": 1.0}\n'
    )
    timer.record("test-questions", 5, 2.0, False)
    assert json.loads(out.getvalue().splitlines()[-1]) == {
        "xqg": "test-questions", "event": "done", "rows": 5, "seconds": 2.0, "rows_per_s": 2.5, "reused": False,
        "load_seconds": 0.0, "work_seconds": 0.0}


def test_mode_from_env_and_argument(monkeypatch):
    monkeypatch.setenv("XQG_PROGRESS", "json")
    assert progress_mode(FakeTTY()) == "json"  # a terminal whose output goes to a log reader
    monkeypatch.setenv("XQG_PROGRESS", "bar")
    assert progress_mode(io.StringIO()) == "bar"
    assert progress_mode(io.StringIO(), "json") == "json"  # the argument wins over the environment
    monkeypatch.setenv("XQG_PROGRESS", " ")
    assert progress_mode(object()) == "json"  # auto; a stream without isatty is no terminal
    monkeypatch.setenv("XQG_PROGRESS", "bars")
    with pytest.raises(UserError, match=r"^XQG_PROGRESS='bars': use bar, json or auto \(bar on a terminal, else JSON lines\)$"):
        StageTimer(io.StringIO())


@pytest.mark.parametrize("mode", ["json", "bar"])
def test_events_never_print_a_credential(mode):
    """A warning naming a presigned URL or user:password@ is masked in both output modes."""
    out = FakeTTY() if mode == "bar" else io.StringIO()
    timer = StageTimer(out, mode=mode)
    timer.event("ingest", "warning", message="read s3://b/k?X-Amz-Security-Token=SENTINEL1&x=1 via http://u:SENTINEL2@host/")
    text = out.getvalue()
    assert "SENTINEL1" not in text and "SENTINEL2" not in text
    assert "X-Amz-Security-Token=***" in text and "http://***@host/" in text
