"""Run a command of this project on the Ray cluster's head node, joined to the cluster.

    ray submit infra/cluster.yaml infra/run_on_cluster.py -- dvc repro
    ray submit infra/cluster.yaml infra/run_on_cluster.py -- python stages/train.py --backbone vgg16 --method icl --seed 0

`ray submit` copies this script to the head and runs it there; the project itself was synced to
/home/ray/wsol by `ray up` (infra/cluster.yaml). After a `dvc repro` that succeeds, what it
produced travels back: `dvc push` sends the cached outputs to the head's DVC remote (the team's
bucket, set up by cluster.yaml), and what git keeps (dvc.lock, metrics, plots data, the report) is
written as one patch, results.patch in the project, for `ray rsync-down` (README, "Versioned
artifacts that travel"). Exits with the first failing command's status.
"""

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(os.environ.get("WSOL_PROJECT", "/home/ray/wsol"))
PATCH = "results.patch"


def run(command: list[str], environment: dict, **kwargs) -> int:
    return subprocess.run(command, cwd=PROJECT, env=environment, **kwargs).returncode


def send_back(environment: dict) -> int:
    """dvc push, then what git keeps against the synced commit as results.patch: changed files and
    new ones (a first run's dvc.lock, metrics, report), which ``git add --intent-to-add`` makes part of
    the diff; what .gitignore leaves out (DVC's outputs, mlflow.db) stays out."""
    status = run(["dvc", "push"], environment)
    if status:
        return status
    status = run(["git", "add", "--intent-to-add", "--all"], environment)
    if status:
        return status
    with (PROJECT / PATCH).open("wb") as patch:
        status = run(["git", "diff", "--binary", "HEAD"], environment, stdout=patch)
    print(f"pushed to the DVC remote; git's part in {PROJECT / PATCH}: "
          f"ray rsync-down infra/cluster.yaml {PROJECT / PATCH} . && git apply {PATCH}")
    return status


if __name__ == "__main__":
    command = sys.argv[1:]
    if not command:
        sys.exit("usage: ray submit infra/cluster.yaml infra/run_on_cluster.py -- <command> [args...]")
    environment = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS", "auto"), "DVC_NO_ANALYTICS": "1"}
    status = run(command, environment)
    if status == 0 and command[:2] == ["dvc", "repro"]:
        status = send_back(environment)
    sys.exit(status)
