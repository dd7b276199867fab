"""The cluster path, run for real: Ray's cluster launcher brings up ``infra/cluster.yaml`` on a
loopback "cluster" (its ``local`` node provider, one head on 127.0.0.1 reached over SSH), and the
README's commands run against it: ``ray up``, ``ray submit ... infra/run_on_cluster.py -- dvc repro``
on a tiny profile, MLflow through an SSH tunnel, ``ray rsync-down`` of results.patch, ``git apply``,
``dvc pull``, ``dvc status``, ``ray down``.

The cluster file is derived from ``infra/cluster.yaml`` by replacing only what names AWS (the
provider, auth and docker blocks, and the node types, whose instance types the local provider
refuses): its file mounts, setup commands, MLflow server, Ray start commands, token and basic auth
are the ones a user runs. What the docker image provides, the test provides: the image's user home,
``/home/ray`` (created for the test and removed after it; SSH logins get it as $HOME, so the
commands' ``~`` is the node's, never this machine's user's), and a Python environment on the node's
PATH that sees this one's packages. The "laptop" side has a HOME and a Ray temp folder of its own.

Needs: ``sshd`` and ``rsync`` (``.ci/run`` installs them: Debian's openssh-server and rsync), and
the right to create ``/home/ray``. ``ray up`` and ``ray down`` run ``ray stop`` on the head, which
is this machine: every Ray instance of this user here stops, so the test runs alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from pipeline.settings import yaml_io
from tests.helpers import params

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.dvc, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
NODE_HOME = Path("/home/ray")  # the Ray image's user's home: cluster.yaml's file mounts and commands name it
MARKER = ".wsol-loopback-test"  # in NODE_HOME while the test owns it
CHECKOUT = ("pipeline", "stages", "infra", "dvc.yaml", "sources.yaml", "pyproject.toml", "README.md", ".gitignore",
            ".dvcignore", ".dvc/config")
TINY = {
    "backbones": ["resnet50"], "methods": ["cam"],
    "datasets.synth.classes": 2, "datasets.synth.images_per_class": {"train": 6, "val": 2, "test": 3},
    "datasets.synth.image_size": 32, "data.crop": 32, "data.resize": 36,
    "backbone_settings.resnet50.epochs": 1, "backbone_settings.resnet50.batch_size": 6,
    "ray.num_workers": 1, "ray.cpus_per_worker": 1, "train.gallery_images": 2, "report.gallery_images": 2,
    "few_shot.epochs": 1, "few_shot.batch_size": 4,
}
RELAY = """import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""  # ssh's ProxyCommand to the test's sshd port: Ray's launcher has no SSH port setting


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failed_command(output: str) -> str:
    """The last command Ray's launcher ran on a node before it failed (its log: ``Running `...```)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    commands = re.findall(r"Running `(.*?)`", plain)
    return commands[-1] if commands else ""


class Loopback:
    """The loopback cluster's files, environments and commands."""

    def __init__(self, tmp: Path, port: int):
        self.tmp, self.port = tmp, port
        self.project = tmp / "project"
        self.laptop = {**os.environ, "HOME": str(tmp / "laptop"), "RAY_TMPDIR": str(tmp / "laptop-ray"),
                       "DVC_NO_ANALYTICS": "1"}
        self.remote = tmp / "dvc-remote"

    def cluster_file(self, extra_setup: str | None = None) -> Path:
        """infra/cluster.yaml of the checkout with the AWS parts replaced by the loopback head."""
        cluster = yaml.safe_load((self.project / "infra" / "cluster.yaml").read_text())
        for aws in ("docker", "available_node_types", "head_node_type"):
            cluster.pop(aws)
        cluster["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
        cluster["auth"] = {"ssh_user": psutil.Process().username(), "ssh_private_key": str(self.tmp / "user_key"),
                           "ssh_proxy_command": f"{sys.executable} {self.tmp / 'relay.py'} 127.0.0.1 {self.port}"}
        if extra_setup:
            cluster["setup_commands"].insert(0, extra_setup)
        path = self.tmp / ("loopback-fault.yaml" if extra_setup else "loopback.yaml")
        path.write_text(yaml.safe_dump(cluster, sort_keys=False))
        return path

    def ray(self, *args: str, timeout: float = 900) -> str:
        """Run the ray CLI as the laptop; fail naming the command the launcher reports as failed."""
        result = run([str(Path(sys.executable).with_name("ray")), *args], self.project, self.laptop, timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0, (f"ray {' '.join(args[:1])} failed (exit {result.returncode}); failed command: "
                                        f"{failed_command(output)!r}\n{output[-6000:]}")
        return output

    def shell(self, *command: str) -> str:
        result = run(list(command), self.project, self.laptop)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout


def _node_environment(tmp: Path) -> Path:
    """A venv on the node's PATH that sees this environment's packages (what the Ray image has
    installed) and has its own console scripts, so the node's pip installs the checkout into it."""
    venv = tmp / "node-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    node_purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True, check=True).stdout.strip())
    (node_purelib / "zz_image_packages.pth").write_text(f"import sys; sys.path.append({str(purelib)!r})\n")
    here = Path(sys.executable).parent
    for script in here.iterdir():
        target = venv / "bin" / script.name
        if script.is_file() and not target.exists():
            lines = script.read_bytes().split(b"\n", 1)
            if len(lines) == 2 and lines[0].startswith(b"#!" + str(here).encode()):  # a console script of this venv
                target.write_bytes(b"#!" + str(venv / "bin" / "python").encode() + b"\n" + lines[1])
                target.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    for tool in ("/usr/sbin/sshd", shutil.which("rsync")):
        if not tool or not Path(tool).exists():
            pytest.fail("the loopback cluster needs sshd and rsync (Debian: apt-get install openssh-server rsync; .ci/run does)")
    if NODE_HOME.exists() and not (NODE_HOME / MARKER).exists():
        pytest.fail(f"{NODE_HOME} exists and is not this test's: the loopback head needs it for itself")
    tmp = tmp_path_factory.mktemp("loopback")
    port = free_port()
    cluster = Loopback(tmp, port)
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
    (tmp / "relay.py").write_text(RELAY)
    (tmp / "sshd_config").write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {tmp / 'host_key'}",
        f"AuthorizedKeysFile {tmp / 'user_key.pub'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", f"PidFile {tmp / 'sshd.pid'}",
        f"SetEnv HOME={NODE_HOME}", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config")], stderr=open(tmp / "sshd.log", "w"))
    venv = tmp / "node-venv"
    try:  # from here on, whatever fails is undone: sshd, the node's home, a cluster started
        yield _setup(cluster, tmp)
    finally:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "down", "-y", str(tmp / "loopback.yaml")],
                       cwd=cluster.project, env=cluster.laptop, capture_output=True, timeout=300)
        for process in psutil.process_iter(["cmdline"]):  # MLflow's server and workers, if the test stopped early
            if str(venv) in " ".join(process.info["cmdline"] or []):
                process.kill()
        sshd.send_signal(signal.SIGTERM)
        sshd.wait(30)
        if (NODE_HOME / MARKER).exists():
            shutil.rmtree(NODE_HOME)


def _setup(cluster: Loopback, tmp: Path) -> Loopback:
    """The node's environment and home, the laptop's secrets and the user's checkout of ``cluster``."""
    venv = _node_environment(tmp)
    NODE_HOME.mkdir()
    (NODE_HOME / MARKER).touch()
    (NODE_HOME / ".bashrc").write_text(f"export PATH={venv / 'bin'}:$PATH\n")  # the image's environment
    # the laptop: Ray's token, MLflow's password, the team's bucket (folders here), as cluster.yaml asks
    laptop = Path(cluster.laptop["HOME"])
    (laptop / ".wsol").mkdir(parents=True)
    (laptop / ".wsol" / "mlflow_password").write_text("loopback-" + os.urandom(12).hex() + "\n")
    (laptop / ".wsol" / "cluster.env").write_text(f"WSOL_DVC_REMOTE={cluster.remote}\nWSOL_RAY_STORAGE={tmp / 'ray-storage'}\n")
    subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"], env=cluster.laptop,
                   check=True, capture_output=True)
    # the checkout a user runs `ray up` from, with a tiny profile committed
    for name in CHECKOUT:
        source, target = ROOT / name, cluster.project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    (cluster.project / "params.yaml").write_text(yaml_io.dump(params(**TINY)))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        subprocess.run(command, cwd=cluster.project, check=True, capture_output=True)
    return cluster


def test_a_setup_command_that_fails_fails_ray_up_naming_it(loopback):
    line = "echo the deliberate fault && exit 7"
    with pytest.raises(AssertionError, match=re.escape(f"failed command: {line!r}")):
        loopback.ray("up", "-y", "--no-config-cache", str(loopback.cluster_file(extra_setup=line)))


def _mlflow_through_the_tunnel(cluster: Loopback, head_uri: str, monkeypatch) -> None:
    """The README's SSH tunnel to the head's MLflow: the run the nodes logged is there, behind basic auth."""
    head = head_uri.removeprefix("http://")
    local = free_port()
    tunnel = subprocess.Popen(["ssh", "-i", str(cluster.tmp / "user_key"), "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", f"ProxyCommand={sys.executable} {cluster.tmp / 'relay.py'} 127.0.0.1 {cluster.port}",
                               "-N", "-L", f"{local}:{head}", f"{psutil.Process().username()}@127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://localhost:{local}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", local), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the SSH tunnel to MLflow did not open"
                time.sleep(0.5)
        assert requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30).status_code == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", (Path(cluster.laptop["HOME"]) / ".wsol" / "mlflow_password").read_text().strip())
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("wsol-synth")
        assert experiment is not None
        runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
        train = runs["synth-resnet50-cam-seed0"]
        assert train.info.status == "FINISHED" and "test_maxboxacc_v2" in train.data.metrics, train.data.metrics.keys()
        assert {"features-resnet50", "few-shot-resnet50"} <= set(runs)
    finally:
        tunnel.terminate()
        tunnel.wait(30)


def _left_behind() -> list[str]:
    """Ray's, MLflow's and the node environment's processes still alive on this machine."""
    left = []
    for process in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if process.info["name"] in ("raylet", "gcs_server") or "mlflow" in line or "ray::" in line or str(NODE_HOME) in line:
            left.append(f"{process.pid} {line[:120]}")
    return left


def test_ray_up_submit_rsync_down_pull_and_down_as_the_readme_says(loopback, monkeypatch):
    cluster = loopback.cluster_file()
    loopback.ray("up", "-y", "--no-config-cache", str(cluster))
    output = loopback.ray("submit", str(cluster), "infra/run_on_cluster.py", "--", "dvc", "repro")
    assert "pushed to the DVC remote" in output
    shells = loopback.ray("exec", str(cluster), "echo auth=$RAY_AUTH_MODE; echo $MLFLOW_TRACKING_URI")
    assert "auth=token" in shells  # Ray's token auth in every node's shell, docker or not
    head_uri = re.findall(r"^(http://\S+:5000)\s*$", shells, flags=re.M)[-1]
    _mlflow_through_the_tunnel(loopback, head_uri, monkeypatch)
    loopback.ray("rsync-down", str(cluster), f"{NODE_HOME}/wsol/results.patch", ".")
    loopback.shell("git", "apply", "results.patch")
    assert (loopback.project / "dvc.lock").is_file() and (loopback.project / "report" / "synth" / "report.md").is_file()
    loopback.shell("dvc", "remote", "add", "-d", "cluster", str(loopback.remote))
    loopback.shell("dvc", "pull")
    assert "Data and pipelines are up to date" in loopback.shell("dvc", "status")
    assert (loopback.project / "runs" / "synth" / "resnet50-cam-seed0" / "model.pt").is_file()
    loopback.ray("exec", str(cluster), "pkill -f '[m]lflow.server'; true")  # MLflow outlives `ray stop` (README)
    loopback.ray("down", "-y", str(cluster))
    deadline = time.monotonic() + 60
    while (left := _left_behind()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, "left running after ray down:\n" + "\n".join(left)
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in (5000, 6379, 8076, 8265)]
    assert not listening, listening
