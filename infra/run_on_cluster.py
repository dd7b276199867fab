"""Run a command of this project on the Ray cluster's head node, joined to the cluster.

    ray submit infra/cluster.yaml infra/run_on_cluster.py -- dvc repro
    ray submit infra/cluster.yaml infra/run_on_cluster.py -- python stages/train.py --backbone vgg16 --method icl --seed 0

`ray submit` copies this script to the head and runs it there; the project itself was synced to
/home/ray/wsol by `ray up` (infra/cluster.yaml). Exits with the command's status.
"""

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(os.environ.get("WSOL_PROJECT", "/home/ray/wsol"))

if __name__ == "__main__":
    command = sys.argv[1:]
    if not command:
        sys.exit("usage: ray submit infra/cluster.yaml infra/run_on_cluster.py -- <command> [args...]")
    environment = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS", "auto"), "DVC_NO_ANALYTICS": "1"}
    sys.exit(subprocess.run(command, cwd=PROJECT, env=environment).returncode)
