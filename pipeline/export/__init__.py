"""Exporting a trained network (torch.export and ONNX, checked against eager), loading a .pt2 safely,
and the registered MLflow model."""
