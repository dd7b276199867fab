"""Test helpers: metadata folders written by hand."""

from pathlib import Path


def write_box_metadata(root: Path, images: dict[str, tuple[int, tuple[int, int], list[tuple[int, int, int, int]]]]) -> Path:
    """images: id -> (label, (width, height), boxes in original pixels). Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_ids.txt").write_text("".join(f"{i}\n" for i in images))
    (root / "class_labels.txt").write_text("".join(f"{i},{label}\n" for i, (label, _, _) in images.items()))
    (root / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (_, (w, h), _) in images.items()))
    (root / "localization.txt").write_text("".join(
        f"{i},{x0},{y0},{x1},{y1}\n" for i, (_, _, boxes) in images.items() for x0, y0, x1, y1 in boxes))
    return root
