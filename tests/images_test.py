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


def test_runs_say_whether_their_grids_are_binary_from_the_data_view():
  """An 8-bit grid whose maximum is 1 stays dark; a binarized one is scaled."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  x = np.array([0, 1], np.uint8).reshape(2, 1, 1, 1)
  for view, top in (("8bit", 1), ("binarized", 255)):
    config = ml_collections.ConfigDict({"data": {"view": view}})
    assert images.grid(x, cols=2, pad=0, binary=experiment._binary(config)).max() == top  # pylint: disable=protected-access
  assert not experiment._binary(ml_collections.ConfigDict({"data": {"name": "captions"}}))  # pylint: disable=protected-access
