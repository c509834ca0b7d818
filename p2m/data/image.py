"""Reading the rendered views: square RGBA (or RGB) PNGs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from p2m.data.errors import DataError

MAX_SIDE = 4096  # pixels: the views are 137 (ShapeNet-P2M) to a few hundred (synthetic); checked before decoding


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one view.

    Returns:
        ndarray (S, S, 4) uint8, RGBA; an RGB file gets an opaque alpha channel.

    Raises:
        DataError: naming the file, if it is missing, not an image, larger than ``MAX_SIDE`` on a side (read
            from the header, before decoding), not RGB/RGBA, or not square.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:  # lazy: reads the header only
            if max(img.size) > MAX_SIDE:
                raise DataError(path, f"image is {img.size[0]}x{img.size[1]} pixels, larger than the "
                                      f"{MAX_SIDE}x{MAX_SIDE} read (refused before decoding)")
            img.load()
            mode, size = img.mode, img.size
            if mode not in ("RGBA", "RGB"):
                raise DataError(path, f"expected an RGBA or RGB image, got mode {mode}")
            array = np.asarray(img.convert("RGBA"))
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except Image.DecompressionBombError as exc:  # PIL refuses past 2 x MAX_IMAGE_PIXELS already at open
        raise DataError(path, f"image too large to decode ({exc})") from None
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
