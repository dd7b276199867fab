"""The guard of a local Ray: once the stage that started it is gone, SIGKILL included, it kills the
processes that stage left running.

``driver.start_local_ray`` runs it as ``python -m pipeline.train.ray_guard`` in a session of its
own, so that a signal to the stage's process group spares it. Why it is needed: Ray's GCS and raylet
die with the driver (PR_SET_PDEATHSIG, ray/_private/services.py), but the raylet's DashboardAgent
and RuntimeEnvAgent, though they see the raylet die, then block a minute or more reporting it to
the dead GCS, listening all the while (ray/_private/process_watcher.py).
"""

from __future__ import annotations

import os
import sys
import time

import psutil

READY = b"watching\n"  # written once to stdout when the guard watches
POLL = 1.0  # seconds between looks at the stage's descendants


def guard() -> None:
    """Until the parent exits, note its descendants every POLL seconds; then kill those still alive."""
    stage, seen = psutil.Process(os.getppid()), set[psutil.Process]()
    sys.stdout.buffer.write(READY)
    sys.stdout.close()
    while os.getppid() == stage.pid:
        try:
            seen = {p for p in seen if p.is_running()} | set(stage.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        time.sleep(POLL)
    for process in seen - {psutil.Process()}:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    guard()
