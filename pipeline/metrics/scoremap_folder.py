"""Evaluate score maps saved by any WSOL code, in the reference's layout: one
``<scoremap_root>/<image_id>.npy`` (a 2-D float array in [0, 1]) per image of the metadata folder.

Files are read, checked and (for boxes) quantised to uint8 by a pool of threads that keeps up to
two batches ahead of the evaluator, so reading overlaps evaluation; memory holds those batches,
not the split. A file's .npy header is checked against the file's size and a (224, 224) map's before
anything is allocated, so a header claiming more is refused at the cost of reading it.
"""

from __future__ import annotations

import io
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.dag.paths import written_atomically
from pipeline.data.metadata import Metadata, inside, load_metadata, read_labels
from pipeline.metrics.bootstrap import confidence_intervals
from pipeline.metrics.box_evaluator import BoxEvaluator
from pipeline.metrics.conventions import MAXBOXACC_V2_IOUS, RESIZE_LENGTH, ScoremapError, check_scoremap
from pipeline.metrics.mask_evaluator import MaskEvaluator

READ_AHEAD = 2  # batches being read while one is evaluated
_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}  # .npy header -> (dtype, shape, Fortran order)
MAX_ITEMSIZE = 16  # bytes a value of the widest float dtype (longdouble) takes


def scoremap_path(scoremap_root: Path, image_id: str) -> Path:
    return scoremap_root / f"{image_id}.npy"


def _header(head: bytes) -> tuple[np.dtype, tuple[int, ...], bool] | None:
    """(dtype, shape, Fortran order) of a .npy file's header (magic to the end of its dict) in format
    1.0 or 2.0; None for an object dtype (which only a pickle stores)."""
    if head not in _HEADERS:
        file = io.BytesIO(head)
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(file)
        if dtype.hasobject:
            return None
        _HEADERS[head] = dtype, shape, fortran_order
    return _HEADERS[head]


def _check_size(fd: int, head: int, dtype: np.dtype, shape: tuple[int, ...], length: int) -> None:
    """Refuse, before anything is allocated, a header claiming more values than a (length, length)
    map or more bytes than one of the widest float (16), or a file whose size is not ``head`` bytes
    plus what the header claims (an allocation is never larger than the file). Raises ValueError."""
    values = math.prod(shape)
    if values > length * length or values * dtype.itemsize > length * length * MAX_ITEMSIZE:
        raise ValueError(f"its header claims a {dtype} array of shape {shape}, larger than a ({length}, {length}) "
                         f"score map; not read")
    size = os.fstat(fd).st_size
    if size != head + values * dtype.itemsize:
        raise ValueError(f"its header claims a {dtype} array of shape {shape}: {head + values * dtype.itemsize} "
                         f"bytes with the header, the file has {size} (truncated, or with data after the array)")


def _read_npy(path: Path, length: int) -> np.ndarray | None:
    """The array of a .npy file (format 1.0 or 2.0) of a plain dtype, read straight into it (no header
    parsing when the header was seen before) when in C order; None for a Fortran-order array, which
    ``np.load`` then reads, or an object one, which it refuses. The header is checked against the size
    of a (length, length) map and the file's size first (:func:`_check_size`). Raises ValueError for a
    file that is not such a .npy and the OSError of ``os.open``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        prefix = os.read(fd, 12)  # magic (6), version (2), header length (2 or 4)
        if len(prefix) < 12 or not prefix.startswith(np.lib.format.MAGIC_PREFIX) or prefix[6:8] not in (b"\1\0", b"\2\0"):
            raise ValueError("not a .npy file of format 1.0 or 2.0")
        start = 8 + (2 if prefix[6] == 1 else 4)  # where the header's dict starts
        head = prefix + os.read(fd, start + int.from_bytes(prefix[8:start], "little") - len(prefix))
        parsed = _header(head)
        if parsed is None:
            return None
        dtype, shape, fortran_order = parsed
        _check_size(fd, len(head), dtype, shape, length)
        if fortran_order:
            return None
        array = np.empty(shape, dtype)
        view, done = memoryview(array.reshape(-1).view(np.uint8)), 0  # type: ignore[arg-type]  # an ndarray is a buffer
        while done < array.nbytes:
            got = os.readv(fd, [view[done:]])
            if got == 0:
                raise ValueError("truncated while being read")
            done += got
        return array
    finally:
        os.close(fd)


def load_scoremap(scoremap_root: Path, image_id: str, length: int = RESIZE_LENGTH) -> np.ndarray:
    """One image's score map as stored; a missing or unreadable file, or one claiming more values
    than a (length, length) map, is an error."""
    path = scoremap_path(scoremap_root, image_id)
    try:
        scoremap = _read_npy(path, length)
        return np.load(path, allow_pickle=False) if scoremap is None else scoremap
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ScoremapError(f"score map of image {image_id!r}: {path} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise ScoremapError(f"score map of image {image_id!r}: {path} is not a readable .npy file: {error}") from None


def _load_checked(scoremap_root: Path, image_id: str, quantised: bool, length: int = RESIZE_LENGTH) -> np.ndarray:
    """One image's checked map, (length, length): quantised to uint8, or as stored (float)."""
    scoremap = load_scoremap(scoremap_root, image_id, length)
    uint8 = check_scoremap(scoremap, image_id, str(scoremap_path(scoremap_root, image_id)), length)
    return uint8 if quantised else scoremap


def _check_inside(scoremap_root: Path, mask_root: Path | None, metadata: Metadata) -> None:
    """Refuse a score map or mask that lies outside its root (:func:`pipeline.data.metadata.inside`)."""
    for line, image_id in enumerate(metadata.image_ids, start=1):
        inside(scoremap_root, f"{image_id}.npy", f"{metadata.root / 'image_ids.txt'}:{line}: image {image_id!r}: score map")
    if mask_root is None or metadata.masks is None:
        return
    for image_id, files in metadata.masks.items():
        for name in filter(None, (*files.masks, files.ignore)):
            inside(mask_root, name, f"{metadata.root / 'localization.txt'}: image {image_id!r}: mask")


def _batches(image_ids: Sequence[str], batch_size: int, load: Callable[[str], np.ndarray],
             ) -> Iterator[tuple[list[str], np.ndarray]]:
    """(image ids, (B, ...) stacked ``load(image_id)``) batches in metadata order, loaded by one thread
    per core while up to READ_AHEAD further batches are in flight; the first failing map of a batch
    (in metadata order) raises."""
    chunks = [list(image_ids[i:i + batch_size]) for i in range(0, len(image_ids), batch_size)]
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        ahead = deque([pool.submit(load, i) for i in chunk] for chunk in chunks[:READ_AHEAD + 1])
        for k, chunk in enumerate(chunks):
            futures = ahead.popleft()
            if k + READ_AHEAD + 1 < len(chunks):
                ahead.append([pool.submit(load, i) for i in chunks[k + READ_AHEAD + 1]])
            yield chunk, np.stack([future.result() for future in futures])
    finally:
        pool.shutdown(cancel_futures=True)


def evaluate_scoremap_folder(metadata_root: str | Path, scoremap_root: str | Path, mask_root: str | Path | None = None,
                             cam_curve_interval: float = 0.01, iou_thresholds: Sequence[int] = MAXBOXACC_V2_IOUS,
                             predictions: str | Path | None = None, single_contour: bool = False,
                             batch_size: int = 64, bootstrap: int = 0, records: str | Path | None = None) -> dict:
    """Box metrics (or PxAP, when ``mask_root`` is given) of a folder of score maps, as a JSON-ready dict.

    ``predictions``: an optional ``<image_id>,<predicted label>`` file for top-1 loc and top-1 cls.
    ``bootstrap``: resamples for 95% confidence intervals under "ci95" ({metric: [low, high]}, seed 0);
    0 for none. ``records``: where to save the per-image records (.npz) the intervals come from.
    """
    if mask_root is not None and predictions is not None:
        raise ValueError("class predictions apply to box metrics; PxAP (mask_root) takes none")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap resamples must be a whole number >= 0, got {bootstrap!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    scoremap_root = Path(scoremap_root)
    metadata = load_metadata(metadata_root, "masks" if mask_root is not None else "boxes")
    _check_inside(scoremap_root, Path(mask_root) if mask_root is not None else None, metadata)
    evaluator: MaskEvaluator | BoxEvaluator
    if mask_root is not None:
        evaluator = MaskEvaluator(metadata, mask_root, cam_curve_interval)
    else:
        evaluator = BoxEvaluator(metadata, cam_curve_interval, iou_thresholds, single_contour)
    predicted = read_labels(predictions, metadata.image_ids) if predictions is not None else None
    load = partial(_load_checked, scoremap_root, quantised=mask_root is None)
    for image_ids, scoremaps in _batches(metadata.image_ids, batch_size, load):
        if isinstance(evaluator, MaskEvaluator):
            evaluator.accumulate(scoremaps, image_ids)
        else:
            labels = [predicted[i] for i in image_ids] if predicted is not None else None
            evaluator.accumulate_quantised(scoremaps, image_ids, labels)
    result = evaluator.compute()
    if records is not None:
        with written_atomically(Path(records)) as staging:  # a full disk leaves no partial file
            result.records.save(staging)
    out = {"cam_curve_interval": cam_curve_interval, **result.to_dict()}
    if bootstrap:
        out["ci95"] = confidence_intervals(result, bootstrap)
    return out
