"""DVC stage `fingerprint@<backbone>-<method>`: the code a run of that pair executes, as the files its
train and export stages depend on instead of the code itself (pipeline/dag/code_deps.py). It runs on any
change of code and rewrites a file only where the run's own code changed, so that only those runs retrain."""

from pipeline.dag.code_deps import FINGERPRINTED, write_fingerprints
from pipeline.dag.stage_runner import run

if __name__ == "__main__":
    run(
        "fingerprint",
        lambda config, layout, args: write_fingerprints(
            layout.root, args.backbone, args.method, FINGERPRINTED, args.method
        ),
        ("backbone", "method"),
    )
