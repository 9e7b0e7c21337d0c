"""PNG grids of images in data space."""

import numpy as np
import pytest
from PIL import Image

from genjax import images


def test_grid_places_every_image():
  x = np.stack([np.full((3, 4, 1), i, np.uint8) for i in range(5)])
  g = images.grid(x, cols=3, pad=1, binary=False)
  assert g.shape == (2 * 4 + 1, 3 * 5 + 1, 1)
  assert g[1, 1, 0] == 0 and g[1 + 4, 1 + 5 * 1, 0] == 4  # row 1, column 1 holds image 4
  assert g[0, 0, 0] == 128  # padding


def test_binary_images_are_scaled_for_display():
  x = np.array([[[[0], [1]]]], np.uint8)
  assert images.to_uint8(x).ravel().tolist() == [0, 255]
  assert images.to_uint8(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]


def test_save_grid_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  path = images.save_grid(tmp_path / "a" / "g.png",
                          rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
  img = Image.open(path)
  assert img.mode == "RGB" and img.size[0] >= 2 * 8


def test_wrong_rank_is_a_clear_error():
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    images.grid(np.zeros((8, 8), np.uint8))
