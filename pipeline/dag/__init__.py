"""The DAG's plumbing: how a stage starts, what code each stage and run depends on, the project's
folders and atomic outputs, and MLflow tracking."""
