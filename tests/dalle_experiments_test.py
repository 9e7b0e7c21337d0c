"""DALL-E through the launchers from nothing: the image tokenizer's run, then the
transformer's, sampling a caption's strips, and evaluating."""

import json

import numpy as np
import pytest

from text_experiments_test import _rows, _run


@pytest.mark.slow
def test_dalle_smoke_runs_from_nothing_then_samples_a_caption(tmp_path, data_dir):
  """One command trains the image tokenizer, then the transformer; sample draws a
  caption's strips (reranked, with classifier-free guidance); evaluate reports nats
  per image token."""
  w = tmp_path / "dalle"
  first = _run(["experiments.main", "--config=experiments/configs/dalle.py:smoke",
                f"--workdir={w}"], data_dir)
  assert "stage 1, the image tokenizer" in first.stderr
  assert (w / "image_tokenizer" / "checkpoints" / "20").exists()
  config = json.loads((w / "config.json").read_text())
  assert config["model"]["tokenizer_workdir"] == str(w / "image_tokenizer")
  assert config["model"]["tokenizer"]["name"] == "dvae"
  rows = [r for r in _rows(w) if "loss" in r]
  assert rows and all(np.isfinite(r["transformer_loss"]) for r in rows)
  grid = tmp_path / "two_seven.png"
  _run(["experiments.sample", f"--workdir={w}", '--caption=two seven', "--num=4",
        "--candidates=2", "--guidance=2", f"--out={grid}"], data_dir)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(grid).size[0] > 2 * 24  # 2 x 2 strips of 8 x 24
  _run(["experiments.evaluate", f"--workdir={w}"], data_dir)
  out = json.loads((w / "eval.json").read_text())
  assert out["num_tokens"] == 40 * 12 and 0 < out["nats_per_token"] < np.log(16) + 1
