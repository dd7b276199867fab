"""The WSOL methods as plug-ins; the registry (pipeline/settings/registry.py) names each one's class."""

from pipeline.models.methods.base import Method, Targets, normalize_maps

__all__ = ["Method", "Targets", "normalize_maps"]
