"""Which images of a split have been evaluated: each must be, exactly once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.metadata import Metadata
from pipeline.metrics.conventions import ScoremapError


class Coverage:
    """One flag per image of ``metadata``; memory O(images)."""

    def __init__(self, metadata: Metadata):
        self.metadata = metadata
        self.index = {image_id: i for i, image_id in enumerate(metadata.image_ids)}
        self.seen = np.zeros(len(metadata), np.bool_)

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Metadata rows (B,) of a batch's image ids; unknown or repeated ids are an error."""
        rows: dict[int, None] = {}
        for image_id in image_ids:
            row = self.index.get(image_id)
            if row is None:
                raise ScoremapError(f"image {image_id!r} is not in the metadata of {self.metadata.root}")
            if self.seen[row] or row in rows:
                raise ScoremapError(f"image {image_id!r} was accumulated twice")
            rows[row] = None
        return np.fromiter(rows, np.int64, len(rows))

    def mark(self, rows: np.ndarray) -> None:
        self.seen[rows] = True

    def check_complete(self) -> int:
        """Number of images; raises if some image was never accumulated."""
        missing = np.flatnonzero(~self.seen)
        if len(missing):
            shown = ", ".join(repr(self.metadata.image_ids[i]) for i in missing[:5])
            raise ScoremapError(f"{len(missing)} image(s) of {self.metadata.root} have no score map: {shown}")
        return len(self.seen)
