"""The exported network as an MLflow pyfunc model, by MLflow's "models from code": MLflow copies
this file into the logged model and runs it on load, so serving needs torch, numpy and mlflow, not
this repository (but pipeline/export/pt2_safety.py, which the model carries). The network is the export
stage's ``model.pt2`` (a ``torch.export`` program), the model's one artifact, under the key ``network``.

    predict({"images": float32 (B, 3, S, S), normalised; "classes": int64 (B,), -1: the predicted class})
        -> {"logits": float32 (B, K), "cams": float32 (B, 224, 224) in [0, 1]}
"""

import mlflow
import numpy as np
import torch

try:  # the repository's module, where this file runs as it is logged
    from pipeline.export.pt2_safety import load_program
except ImportError:  # the MLflow model's copy of it, its one code path (pipeline/export/served_model.py)
    from pt2_safety import load_program  # type: ignore[no-redef]


class ExportedNetwork(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    def load_context(self, context):
        # torch.export.load would run code that a replaced model.pt2 carries: checked first
        self.network = load_program(context.artifacts["network"]).module()

    def predict(self, context, model_input, params=None):
        images = torch.as_tensor(np.asarray(model_input["images"], dtype=np.float32))
        classes = torch.as_tensor(np.asarray(model_input["classes"], dtype=np.int64))
        with torch.no_grad():
            logits, cams = self.network(images, classes)
        return {"logits": logits.numpy(), "cams": cams.numpy()}


mlflow.models.set_model(ExportedNetwork())
