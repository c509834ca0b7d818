"""Reading the rendered views: square RGBA (or RGB) PNGs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from p2m.data.errors import DataError


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one view.

    Returns:
        ndarray (S, S, 4) uint8, RGBA; an RGB file gets an opaque alpha channel.

    Raises:
        DataError: naming the file, if it is missing, not an image, not RGB/RGBA, or not square.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            if mode not in ("RGBA", "RGB"):
                raise DataError(path, f"expected an RGBA or RGB image, got mode {mode}")
            array = np.asarray(img.convert("RGBA"))
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(path, f"not a readable image ({exc})") from None
    if size[0] != size[1]:
        raise DataError(path, f"expected a square image, got {size[0]}x{size[1]}")
    return array


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite (S, S, 4) uint8 RGBA over white; returns (S, S, 3) float32 in [0, 1]."""
    rgb = rgba[..., :3].astype(np.float32) / 255.0
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    return rgb * alpha + (1.0 - alpha)
