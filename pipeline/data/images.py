"""Reading image files, with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import PipelineError

# Pixels an image may declare: 50 Mpx (150 MB decoded as RGB), far above the photographs of the WSOL
# benchmarks (CUB-200-2011's are at most 500 px a side; ILSVRC's and OpenImages' are web photos of a
# few Mpx) and below Pillow's own limit (Image.MAX_IMAGE_PIXELS, 89 Mpx: a warning, an error at twice
# that), so a file declaring more is refused from its header, before anything is decoded.
MAX_PIXELS = 50_000_000


class ImageReadError(PipelineError, OSError):
    """A missing, unreadable or corrupt image; the message names the file (and the image id)."""


def _describe(path: Path, image_id: str | None) -> str:
    return f"{path}" + (f" (image {image_id!r})" if image_id is not None else "")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A grey image of more than 8 bits as mode L; any other image unchanged.

    Integer modes (I;16*, I) hold 0..65535 and keep their high byte, ``v >> 8``, as Pillow reads
    16-bit colour PNGs and OpenCV any 16-bit PNG; float mode F holds 0..1 and becomes
    ``round(255 v)``. Values outside that range (or NaN) raise ValueError: their scale is unknown.
    """
    if image.mode == "F":
        values, top = np.asarray(image, np.float64), 1
    elif image.mode == "I" or image.mode.startswith("I;16"):
        values, top = np.asarray(image, np.int64), 65535
    else:
        return image
    low, high = values.min(), values.max()
    if not 0 <= low <= high <= top:
        raise ValueError(f"mode {image.mode} values must lie in [0, {top}], found {low}..{high}")
    eight = np.rint(values * 255) if image.mode == "F" else values >> 8  # type: ignore[operator]  # integers
    return Image.fromarray(eight.astype(np.uint8))  # (H, W) uint8: mode L


def load_rgb(path: Path, image_id: str | None = None) -> Image.Image:
    """The decoded image as 8-bit RGB: 16-bit and float grey scaled to 8 bits (see :func:`_eight_bit`),
    alpha dropped, palette, 1-bit, grey and CMYK converted by Pillow. An image declaring more than
    MAX_PIXELS is refused from its header, before it is decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageReadError(f"{_describe(path, image_id)}: declares {width}x{height} pixels, over the "
                                     f"cap of {MAX_PIXELS:,} (MAX_PIXELS)")
            return _eight_bit(image).convert("RGB")
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{_describe(path, image_id)}: image file is missing") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit, above ours: refused while opening
        raise ImageReadError(f"{_describe(path, image_id)}: declares more pixels than the cap of {MAX_PIXELS:,} "
                             f"(MAX_PIXELS): {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{_describe(path, image_id)}: cannot decode image: {error}") from None


def measure(paths: Iterable[Path], threads: int = 8) -> list[tuple[int, int] | ImageReadError]:
    """The (width, height) of each file, or the error reading it, in order: every file is decoded
    in full by :func:`load_rgb` (several threads), so a truncated or corrupt one fails here."""
    def one(path: Path):
        try:
            return load_rgb(path).size
        except ImageReadError as error:
            return error

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, paths))
