"""Ending every process a test started, even those that left its process group (Ray's workers, agents)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import List


def pids_using(marker: str) -> List[int]:
    """Processes whose command line names ``marker`` (e.g. a test's private Ray temp dir)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(p.name) != os.getpid():
            pids.append(int(p.name))
    return pids


def pids_in_session(sid: int) -> List[int]:
    """Processes of session ``sid``: Ray's workers rename themselves (``ray::IDLE``) and take their own
    process group, but stay in the session of the driver that a test started with ``start_new_session``."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and int(p.name) != os.getpid():
            pids.append(int(p.name))
    return pids


def kill_session(sid: int, timeout: float = 15.0) -> None:
    """SIGKILL every process of session ``sid`` until none is left (or ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = pids_in_session(sid)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def kill_all_using(marker: str, timeout: float = 15.0) -> None:
    """SIGKILL every process naming ``marker`` until none is left (or ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = pids_using(marker)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
