"""Image grids as PNG files."""

from __future__ import annotations

import math
import pathlib

import numpy as np


def to_uint8(images: np.ndarray, binary: bool | None = None) -> np.ndarray:
  """Maps images in data space to 0..255 for display.

  Args:
    images: ``[N, H, W, C]``; uint8 in ``{0, 1}`` (binarized), uint8 ``0..255``, or
      float in ``[0, 1]``.
    binary: whether uint8 images hold 0/1; guessed from the values when None.
  """
  x = np.asarray(images)
  if x.dtype != np.uint8:
    return (np.clip(x, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
  if binary is None:
    binary = x.size > 0 and int(x.max()) <= 1
  return x * np.uint8(255) if binary else x


def grid(images: np.ndarray, cols: int | None = None, pad: int = 1,
         binary: bool | None = None) -> np.ndarray:
  """Tiles ``[N, H, W, C]`` images into one ``[rows*(H+pad)+pad, ..., C]`` image."""
  x = to_uint8(images, binary)
  if x.ndim != 4:
    raise ValueError(f"expected images of shape [N, H, W, C], got {x.shape}")
  n, h, w, c = x.shape
  cols = cols or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    out[pad + r * (h + pad):pad + r * (h + pad) + h,
        pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
  return out


def save_grid(path: str | pathlib.Path, images: np.ndarray, cols: int | None = None,
              binary: bool | None = None, scale: int | None = None) -> pathlib.Path:
  """Writes images as one PNG grid, upscaled so that small images stay visible."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  g = grid(images, cols=cols, binary=binary)
  if scale is None:
    scale = max(1, 256 // max(g.shape[0], g.shape[1]) + (1 if g.shape[0] < 128 else 0))
  if scale > 1:
    g = g.repeat(scale, axis=0).repeat(scale, axis=1)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(path)
  return path
