"""DVC stage `fingerprint_rows@<backbone>`: the code the backbone's reference rows (features, few_shot)
execute, as the files those stages depend on instead of the code itself (pipeline/dag/code_deps.py)."""

from pipeline.dag.code_deps import FINGERPRINTED_ROWS, ROW_METHOD, write_fingerprints
from pipeline.dag.stage_runner import run

if __name__ == "__main__":
    run(
        "fingerprint_rows",
        lambda config, layout, args: write_fingerprints(
            layout.root, args.backbone, ROW_METHOD, FINGERPRINTED_ROWS, None
        ),
        ("backbone",),
    )
