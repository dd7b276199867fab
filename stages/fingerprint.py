"""DVC stage `fingerprint@<backbone>-<method>`: the code a run of that pair executes, as the files its
train and export stages depend on instead of the code itself (pipeline/dag/code_deps.py). It runs on any
change of code and rewrites a file only where the run's own code changed, so that only those runs retrain."""

import json

from pipeline.dag.code_deps import FINGERPRINTED, fingerprint, fingerprint_file
from pipeline.dag.paths import write_text_atomically
from pipeline.dag.stage_runner import run


def fingerprint_stage(config, layout, args):
    for stage, entry in FINGERPRINTED.items():
        record = fingerprint(args.backbone, args.method, layout.root / entry, layout.root)
        path = layout.root / fingerprint_file(args.backbone, args.method, stage)
        path.parent.mkdir(exist_ok=True)
        write_text_atomically(path, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    run("fingerprint", fingerprint_stage, ("backbone", "method"))
