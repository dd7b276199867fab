"""Where Ray listens and what outlives a stage: the local Ray a training stage starts (a real one,
in a process that is then SIGKILLed), and the MLflow address the cluster's workers are given."""

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.dag.tracking import reachable_uri

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}  # what the raylet starts, and outlived it
START = """
import time
from pipeline.train.driver import start_local_ray
start_local_ray(1)
print("ready", flush=True)
time.sleep(600)
"""


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()).strip()  # Ray pads the titles it sets
    except psutil.NoSuchProcess:
        return ""


def _listening(process: psutil.Process) -> set[str]:
    try:
        return {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except psutil.NoSuchProcess:
        return set()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE  # is_running: not a reused pid
    except psutil.NoSuchProcess:
        return False


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too


@pytest.fixture(scope="module")
def killed_stage(tmp_path_factory):
    """(the addresses each process a local-Ray stage started listens on, the processes still alive
    30 s after the stage was SIGKILLed)."""
    log = tmp_path_factory.mktemp("stage") / "stderr.txt"
    with log.open("w") as stderr:
        stage = subprocess.Popen([sys.executable, "-c", START], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
    if stage.stdout.readline() != "ready\n":
        stage.kill()
        pytest.fail(log.read_text()[-3000:])
    deadline = time.time() + 30  # the agents open their ports about when ray.init returns
    while True:
        descendants = psutil.Process(stage.pid).children(recursive=True)
        agents = [p for p in descendants if _title(p) in AGENTS]
        if len(agents) == len(AGENTS) and all(map(_listening, agents)) or time.time() > deadline:
            break
        time.sleep(0.2)
    listening = {f"{p.pid} {_title(p)[:80]}": _listening(p) for p in descendants}
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    deadline = time.time() + 30
    while (alive := [p for p in descendants if _alive(p)]) and time.time() < deadline:
        time.sleep(0.5)
    yield listening, alive
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def test_the_local_ray_listens_on_loopback_only(killed_stage):
    listening, _ = killed_stage
    assert {title for name in listening for title in AGENTS if name.endswith(title)} == AGENTS  # seen listening
    assert {name: ips for name, ips in listening.items() if not all(map(_loopback, ips))} == {}


def test_no_process_of_the_local_ray_outlives_a_sigkilled_stage(killed_stage):
    _, alive = killed_stage
    assert [_title(p) for p in alive] == []


def test_the_workers_reach_a_loopback_tracking_server_at_the_drivers_node():
    assert reachable_uri("http://127.0.0.1:5000", "10.0.1.7") == "http://10.0.1.7:5000"
    assert reachable_uri("http://localhost:5000/", "10.0.1.7") == "http://10.0.1.7:5000/"
    assert reachable_uri("https://user@[::1]:8443/mlflow?x=1", "fd00::7") == "https://user@[fd00::7]:8443/mlflow?x=1"
    assert reachable_uri("http://localhost", "10.0.1.7") == "http://10.0.1.7"
    for unchanged in ("http://10.0.0.5:5000", "https://mlflow.example.org", "sqlite:////home/ray/wsol/mlflow.db",
                      "file:///tmp/mlruns", "databricks"):
        assert reachable_uri(unchanged, "10.0.1.7") == unchanged
