"""Scoring CAMs under the protocol: the evaluate stage, the per-split scoring every stage shares, and
``wsol localize``."""
