"""Ending every process a test started, even those that left its process group (Ray's workers, agents)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
import subprocess
from typing import Callable, List


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


def _kill_until_gone(find: Callable[[], List[int]], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = find()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def kill_session(sid: int, timeout: float = 15.0) -> None:
    """SIGKILL every process of session ``sid`` until none is left (or ``timeout``)."""
    _kill_until_gone(lambda: pids_in_session(sid), timeout)


def kill_all_using(marker: str, timeout: float = 15.0) -> None:
    """SIGKILL every process naming ``marker`` until none is left (or ``timeout``)."""
    _kill_until_gone(lambda: pids_using(marker), timeout)


def stop_ray_head(proc: subprocess.Popen, temp: str) -> None:
    """End a ``ray start --head --block`` started with ``start_new_session``, and all it started.

    SIGKILL at once: a graceful stop waits out a 30 s timeout here, and nothing of a
    test's cluster needs to outlive it.  Agents and workers rename themselves
    (``ray::DashboardAgent``) and leave the process group but stay in the head's
    session; fake nodes started by an autoscaler name the private temp dir.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    kill_session(proc.pid)
    kill_all_using(temp)


def end_driver(proc: "subprocess.Popen", ray_tmp: str) -> None:
    """SIGKILL a driver started with ``start_new_session`` and its private Ray temp dir ``ray_tmp``, then every
    process it started (raylet, GCS, workers: all in its session or naming that dir), and remove the dir."""
    import shutil

    proc.kill()
    proc.wait()
    kill_session(proc.pid)
    kill_all_using(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def wait_for_other_jobs(timeout: float = 60.0) -> None:
    """Block until every other driver's job on this process's Ray cluster is dead and its actors' processes are gone
    (but detached ones, which outlive their job by design).

    A driver SIGKILLed while joined to a cluster leaves its workers to the cluster,
    which ends them once the GCS has marked its job dead, a moment later; until
    then an actor could still write (a unit's output, a commit).  A test that
    starts the next driver on the same output, or counts what the killed one
    committed, waits here first.  (Through ``ray._private.state``: Ray is pinned,
    and the public state API needs the dashboard, which the local cluster does not run.)
    """
    import psutil
    import ray
    from ray._private import state

    me = ray.get_runtime_context().get_job_id()
    deadline = time.time() + timeout
    while True:
        jobs = [j["JobID"] for j in state.jobs() if j["JobID"] != me and not j["IsDead"]]
        pids = []
        for a in state.actors().values():
            if a["JobID"] != me and a["Pid"] and not a["IsDetached"]:  # Ray Data's detached helpers serve every job
                try:
                    if psutil.Process(a["Pid"]).status() != psutil.STATUS_ZOMBIE:
                        pids.append(a["Pid"])
                except psutil.NoSuchProcess:
                    pass
        if not jobs and not pids:
            return
        if time.time() > deadline:
            raise AssertionError(f"jobs {jobs} and actor processes {pids} outlived their killed driver by {timeout:g} s")
        time.sleep(0.1)
