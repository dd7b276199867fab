"""Reading image files, with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.errors import PipelineError


class ImageReadError(PipelineError, OSError):
    """A missing, unreadable or corrupt image; the message names the file (and the image id)."""


def _describe(path: Path, image_id: str | None) -> str:
    return f"{path}" + (f" (image {image_id!r})" if image_id is not None else "")


def load_rgb(path: Path, image_id: str | None = None) -> Image.Image:
    """The decoded image, converted to RGB."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"{_describe(path, image_id)}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{_describe(path, image_id)}: cannot decode image: {error}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header; raises :class:`ImageReadError`."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable image: {error}") from None


def measure(paths: Iterable[Path], threads: int = 8) -> list[tuple[int, int] | ImageReadError]:
    """The size of each file, or the error reading it, in order (headers read by several threads)."""
    def one(path: Path):
        try:
            return image_size(path)
        except ImageReadError as error:
            return error

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, paths))
