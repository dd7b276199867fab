"""The configuration: params.yaml read as YAML 1.2 and validated into one typed config, the registry of
backbones and methods, and the edits of ``wsol params apply``."""
