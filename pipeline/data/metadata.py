"""Dataset metadata in the on-disk format of clovaai/wsolevaluation.

A metadata folder holds four comma-separated text files without header, one record a line:

    image_ids.txt     <image_id>
    class_labels.txt  <image_id>,<label>
    image_sizes.txt   <image_id>,<width>,<height>          original image size, pixels
    localization.txt  <image_id>,<x0>,<y0>,<x1>,<y1>       a box in original pixels, one line per box
                  or  <image_id>,<mask_path>,<ignore_path> a mask (paths relative to the mask root),
                                                           one line per mask; the ignore mask is named
                                                           on the image's first line only

image_ids.txt names at least one image. Every id of image_ids.txt must appear in every other file
and no other id may, and every box must lie inside its image: ``0 <= x0 <= x1 <= width`` and
``0 <= y0 <= y1 <= height``; anything else is a :class:`MetadataError` naming the file, the line (or
every bad box), the image id and what is wrong.

Metadata files are UTF-8 (a leading byte order mark is allowed), read through :func:`metadata_lines`.
Image ids and mask paths are paths relative to a root, and every one must name a file under it: the
readers refuse one that is absolute, climbs out with '..' or holds a NUL byte or a drive, and
:func:`inside` also refuses one whose symbolic links lead out, where the root is known.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from pipeline.errors import PipelineError, first_few

FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")
SHOWN_BOXES = 20  # boxes outside their image listed in full before "and N more"

Box = tuple[int, int, int, int]


class MetadataError(PipelineError, ValueError):
    """Malformed or inconsistent metadata; the message names file, line and image id."""


@dataclass(frozen=True)
class MaskFiles:
    """Ground-truth masks of one image: instance mask paths and the ignore-region mask path ('' = none)."""

    masks: tuple[str, ...]
    ignore: str


@dataclass(frozen=True)
class Metadata:
    """One split's metadata. At most one of ``boxes`` and ``masks`` is set (neither when read
    without localization, as training does)."""

    root: Path
    image_ids: tuple[str, ...]
    class_labels: dict[str, int]
    image_sizes: dict[str, tuple[int, int]]  # (width, height)
    boxes: dict[str, tuple[Box, ...]] | None = None
    masks: dict[str, MaskFiles] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)


def metadata_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without its line end) of a metadata file, decoded as UTF-8; a leading
    UTF-8 byte order mark is skipped. A line that is not UTF-8 (latin-1, UTF-16, ...) is a
    :class:`MetadataError` naming the file, the line and the byte offset in the file."""
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file is missing")
    with path.open("rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            start = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                text = raw[start:].decode("utf-8")
            except UnicodeDecodeError as error:
                bom = " (a UTF-16 byte order mark)" if offset == 0 and raw.startswith(
                    (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else ""
                at = start + error.start
                raise MetadataError(f"{path}:{lineno}: not UTF-8: byte {raw[at]:#04x} at byte offset {offset + at}"
                                    f"{bom}; metadata files must be UTF-8 text") from None
            yield lineno, text.rstrip("\r\n")
            offset += len(raw)


def _escape(relative: str) -> str | None:
    """How a relative path read from metadata could name a file outside its root, or None: absolute
    (``/x``, ``\\x``, a drive ``C:x``), climbing out (a '..' part, '/' or '\\' separated), or holding a
    NUL byte (which the OS would cut the path at)."""
    if "\0" in relative:
        return "holds a NUL byte"
    if relative.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", relative):
        return "is absolute"
    if ".." in re.split(r"[/\\]", relative):
        return "climbs out with '..'"
    return None


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` for a path read from metadata (an image id, a mask path), which must name a
    file under ``root``: refused when absolute, climbing out with '..', holding a NUL byte or a drive,
    or leading out through a symbolic link (``root`` itself may be one). ``what`` says where the path
    was read (``"<file>:<line>: image id"``) for the :class:`MetadataError`."""
    path = root / relative
    fault = _escape(relative)
    if fault is None and not path.resolve().is_relative_to(root.resolve()):
        fault = f"leads to {path.resolve()} through a symbolic link"
    if fault is not None:
        raise MetadataError(f"{what} {relative!r} {fault}: it must name a file under {root}")
    return path


def _rows(path: Path, columns: tuple[str, ...]):
    """Yield (line number, fields) of a metadata file, checking the number of fields."""
    for lineno, line in metadata_lines(path):
        fields = line.split(",")
        if len(fields) != len(columns):
            raise MetadataError(
                f"{path}:{lineno}: expected {len(columns)} comma-separated fields "
                f"({','.join(columns)}), found {len(fields)}: {line.rstrip()!r}"
            )
        if not fields[0]:
            raise MetadataError(f"{path}:{lineno}: empty image id")
        yield lineno, fields


def _relative(path: Path, lineno: int, name: str, relative: str) -> None:
    """Refuse a path read from metadata that could leave its root (:func:`_escape`)."""
    fault = _escape(relative)
    if fault is not None:
        raise MetadataError(f"{path}:{lineno}: {name} {relative!r} {fault}: it must be a path under its root")


def _integers(path: Path, lineno: int, image_id: str, names: tuple[str, ...], values: list[str]) -> list[int]:
    out = []
    for name, value in zip(names, values, strict=False):
        try:
            out.append(int(value))
        except ValueError:
            raise MetadataError(
                f"{path}:{lineno}: image {image_id!r}: {name} must be an integer, got {value!r}"
            ) from None
    return out


class _IdCheck:
    """Checks that a file names each image of image_ids.txt (once, if ``unique``) and no other."""

    def __init__(self, path: Path, known: set[str], unique: bool):
        self.path, self.known, self.unique = path, known, unique
        self.first_line: dict[str, int] = {}

    def see(self, lineno: int, image_id: str) -> bool:
        """Record one line; return True when it is the first line of this image."""
        if image_id not in self.known:
            raise MetadataError(f"{self.path}:{lineno}: image {image_id!r} is not listed in image_ids.txt")
        if image_id in self.first_line:
            if self.unique:
                raise MetadataError(
                    f"{self.path}:{lineno}: duplicate image id {image_id!r} "
                    f"(first on line {self.first_line[image_id]})"
                )
            return False
        self.first_line[image_id] = lineno
        return True

    def finish(self, image_ids: tuple[str, ...]) -> None:
        missing = [i for i in image_ids if i not in self.first_line]
        if missing:
            raise MetadataError(f"{self.path}: no line for image {first_few([repr(i) for i in missing])} of image_ids.txt")


def read_labels(path: str | Path, image_ids: tuple[str, ...]) -> dict[str, int]:
    """A ``<image_id>,<label>`` file (class_labels.txt, or class predictions) naming each image once."""
    path = Path(path)
    labels: dict[str, int] = {}
    check = _IdCheck(path, set(image_ids), unique=True)
    for lineno, (image_id, label) in _rows(path, ("image_id", "label")):
        check.see(lineno, image_id)
        (labels[image_id],) = _integers(path, lineno, image_id, ("label",), [label])
        if labels[image_id] < 0:
            raise MetadataError(f"{path}:{lineno}: image {image_id!r}: negative label {label}")
    check.finish(image_ids)
    return labels


def read_image_ids(path: str | Path) -> tuple[str, ...]:
    """An image_ids.txt: one id a line, no duplicates."""
    path = Path(path)
    first_line: dict[str, int] = {}
    for lineno, (image_id,) in _rows(path, ("image_id",)):
        _relative(path, lineno, "image id", image_id)
        if image_id in first_line:
            raise MetadataError(f"{path}:{lineno}: duplicate image id {image_id!r} (first on line {first_line[image_id]})")
        first_line[image_id] = lineno
    if not first_line:
        raise MetadataError(f"{path}: no image ids (the file is empty)")
    return tuple(first_line)


def read_sizes(path: str | Path, image_ids: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """An image_sizes.txt naming each image once: id -> (width, height), positive."""
    path = Path(path)
    sizes: dict[str, tuple[int, int]] = {}
    check = _IdCheck(path, set(image_ids), unique=True)
    for lineno, (image_id, *wh) in _rows(path, ("image_id", "width", "height")):
        check.see(lineno, image_id)
        width, height = _integers(path, lineno, image_id, ("width", "height"), wh)
        if width <= 0 or height <= 0:
            raise MetadataError(f"{path}:{lineno}: image {image_id!r}: size must be positive, got {width}x{height}")
        sizes[image_id] = (width, height)
    check.finish(image_ids)
    return sizes


@overload
def read_localization(path: str | Path, image_ids: tuple[str, ...],
                      kind: Literal["boxes"]) -> dict[str, tuple[Box, ...]]: ...
@overload
def read_localization(path: str | Path, image_ids: tuple[str, ...],
                      kind: Literal["masks"]) -> dict[str, MaskFiles]: ...
@overload
def read_localization(path: str | Path, image_ids: tuple[str, ...],
                      kind: Literal["auto"] = "auto") -> dict[str, tuple[Box, ...]] | dict[str, MaskFiles]: ...
def read_localization(path: str | Path, image_ids: tuple[str, ...],
                      kind: Literal["auto", "boxes", "masks"] = "auto") -> dict[str, tuple[Box, ...]] | dict[str, MaskFiles]:
    """A localization.txt naming each image at least once: boxes (five fields) or masks (three);
    ``"auto"`` decides from the first line."""
    path = Path(path)
    if kind == "auto":
        kind = _localization_kind(path)
    if kind == "boxes":
        return _read_boxes(path, set(image_ids), image_ids)
    if kind == "masks":
        return _read_masks(path, set(image_ids), image_ids)
    raise ValueError(f"localization must be 'auto', 'boxes' or 'masks', got {kind!r}")


def box_faults(boxes: dict[str, tuple[Box, ...]], sizes: dict[str, tuple[int, int]]) -> list[str]:
    """One line per box not inside its image of (width, height) pixels: ``0 <= x0 <= x1 <= width``
    and ``0 <= y0 <= y1 <= height`` (x1 == width, a box touching the edge, passes). Images without
    a size are skipped."""
    return [f"image {image_id!r}: box {box} is not inside the {width}x{height} image"
            for image_id, image_boxes in boxes.items() if image_id in sizes
            for width, height in [sizes[image_id]] for box in image_boxes
            if not (0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height)]


def load_metadata(root: str | Path, localization: Literal["auto", "boxes", "masks", "none"] = "auto",
                  check_boxes: bool = True) -> Metadata:
    """Read and validate a metadata folder.

    ``localization`` says how localization.txt is read; ``"auto"`` decides from its first line
    (five fields: boxes; three: masks); ``"none"`` does not read it (training sees no boxes or masks).
    ``check_boxes=False`` leaves boxes unchecked against image_sizes.txt (the split stage checks
    them against the decoded images instead).
    """
    root = Path(root)
    if not root.is_dir():
        raise MetadataError(f"{root}: metadata folder does not exist")
    ids = read_image_ids(root / "image_ids.txt")
    labels = read_labels(root / "class_labels.txt", ids)
    sizes = read_sizes(root / "image_sizes.txt", ids)
    if localization == "none":
        return Metadata(root, ids, labels, sizes)
    loc_path = root / "localization.txt"
    if localization == "auto":
        localization = _localization_kind(loc_path)
    if localization == "boxes":
        boxes = read_localization(loc_path, ids, "boxes")
        faults = box_faults(boxes, sizes) if check_boxes else []
        if faults:
            more = [f"... and {len(faults) - SHOWN_BOXES} more"] if len(faults) > SHOWN_BOXES else []
            raise MetadataError(f"{loc_path}: {len(faults)} box(es) outside their image (image_sizes.txt):\n  "
                                + "\n  ".join(faults[:SHOWN_BOXES] + more))
        return Metadata(root, ids, labels, sizes, boxes=boxes)
    if localization == "masks":
        return Metadata(root, ids, labels, sizes, masks=read_localization(loc_path, ids, "masks"))
    raise ValueError(f"localization must be 'auto', 'boxes', 'masks' or 'none', got {localization!r}")


def _localization_kind(path: Path) -> Literal["boxes", "masks"]:
    first = next((line for _, line in metadata_lines(path)), "")
    n_fields = len(first.split(","))
    if n_fields == 5:
        return "boxes"
    if n_fields == 3:
        return "masks"
    raise MetadataError(
        f"{path}:1: expected 5 fields (image_id,x0,y0,x1,y1) or 3 fields "
        f"(image_id,mask_path,ignore_path), found {n_fields}: {first!r}"
    )


def _read_boxes(path: Path, known: set[str], ids: tuple[str, ...]) -> dict[str, tuple[Box, ...]]:
    names = ("x0", "y0", "x1", "y1")
    boxes: dict[str, list[Box]] = {}
    check = _IdCheck(path, known, unique=False)
    for lineno, (image_id, *coords) in _rows(path, ("image_id", *names)):
        check.see(lineno, image_id)
        x0, y0, x1, y1 = _integers(path, lineno, image_id, names, coords)
        if min(x0, y0, x1, y1) < 0:
            raise MetadataError(f"{path}:{lineno}: image {image_id!r}: negative box coordinate in {coords}")
        if x1 < x0 or y1 < y0:
            raise MetadataError(
                f"{path}:{lineno}: image {image_id!r}: inverted box {coords} (need x0 <= x1 and y0 <= y1)"
            )
        boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    check.finish(ids)
    return {image_id: tuple(b) for image_id, b in boxes.items()}


def _read_masks(path: Path, known: set[str], ids: tuple[str, ...]) -> dict[str, MaskFiles]:
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    check = _IdCheck(path, known, unique=False)
    for lineno, (image_id, mask, ignore) in _rows(path, ("image_id", "mask_path", "ignore_path")):
        first = check.see(lineno, image_id)
        if not mask:
            raise MetadataError(f"{path}:{lineno}: image {image_id!r}: empty mask path")
        for name, relative in (("mask path", mask), ("ignore path", ignore)):
            _relative(path, lineno, f"image {image_id!r}: {name}", relative)
        if first:
            ignores[image_id] = ignore
        elif ignore:
            raise MetadataError(
                f"{path}:{lineno}: image {image_id!r}: the ignore mask may be named on the image's "
                f"first line only (line {check.first_line[image_id]})"
            )
        masks.setdefault(image_id, []).append(mask)
    check.finish(ids)
    return {image_id: MaskFiles(tuple(m), ignores[image_id]) for image_id, m in masks.items()}


def write_metadata(metadata: Metadata, root: str | Path) -> None:
    """Write a metadata folder in the format :func:`load_metadata` reads (localization.txt only when
    the metadata has boxes or masks)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = metadata.image_ids

    def write(name: str, lines) -> None:
        (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

    write("image_ids.txt", ids)
    write("class_labels.txt", (f"{i},{metadata.class_labels[i]}" for i in ids))
    write("image_sizes.txt", (f"{i},{w},{h}" for i in ids for w, h in [metadata.image_sizes[i]]))
    if metadata.boxes is not None:
        write("localization.txt", (f"{i},{x0},{y0},{x1},{y1}" for i in ids for x0, y0, x1, y1 in metadata.boxes[i]))
    elif metadata.masks is not None:
        write("localization.txt", (f"{i},{mask},{metadata.masks[i].ignore if k == 0 else ''}"
                                   for i in ids for k, mask in enumerate(metadata.masks[i].masks)))
