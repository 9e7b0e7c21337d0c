"""The benchmark scripts' own logic (their numbers come from runs, not tests)."""

import sys
import xml.etree.ElementTree as ET

import jax
import numpy as np
import pytest

from experiments.benchmarks import diffusion_samplers
from genjax import models
from genjax import train


def test_sampler_settings_parse_and_bad_ones_name_the_form():
  assert diffusion_samplers.parse_settings(["ddim:50", "ancestral:1000:500"]) == [
      ("ddim", 50, None), ("ancestral", 1000, 500)]
  for bad in ("ddim", "ddim:fifty", "ddim:5:6:7"):
    with pytest.raises(ValueError, match="sampler:steps"):
      diffusion_samplers.parse_settings([bad])


def test_quality_speed_plot_is_valid_svg_with_one_point_per_setting():
  rows = [{"sampler": "ddim", "steps": s, "fid": f, "images_per_second": r}
          for s, f, r in ((10, 40.0, 20.0), (50, 25.0, 4.0), (100, 22.0, 2.0))]
  svg = ET.fromstring(diffusion_samplers.svg_plot(rows, "test"))
  circles = [e for e in svg.iter() if e.tag.endswith("circle")]
  assert len(circles) == 3
  ys = [float(c.get("cy")) for c in circles]
  assert ys[0] < ys[2]  # a higher FID is drawn higher up (smaller y)
  xs = [float(c.get("cx")) for c in circles]
  assert xs[0] > xs[1] > xs[2]  # faster to the right


def test_vs_pytorch_refuses_unknown_pairs_and_names_the_install_without_torch(monkeypatch):
  from experiments.benchmarks import vs_pytorch  # pylint: disable=g-import-not-at-top
  assert vs_pytorch.parse_pairs(["vae", "glow", "vae"]) == ["vae", "glow"]
  with pytest.raises(ValueError, match="unknown pair 'pixelrnn'.*choose from pixelcnn, "
                     "gated_pixelcnn, glow, vae, dcgan"):
    vs_pytorch.parse_pairs(["pixelcnn", "pixelrnn"])
  for name in ("torch", "normflows"):  # importing them now raises ImportError
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ValueError, match=r'pip install -e "\.\[bench\]"'):
    vs_pytorch.require_torch()


def test_torch_twins_have_the_parameter_counts_of_the_genjax_models():
  pytest.importorskip("torch")
  pytest.importorskip("normflows")
  from experiments.benchmarks import torch_twins, vs_pytorch  # pylint: disable=g-import-not-at-top
  for pair in vs_pytorch.PAIRS:
    config = vs_pytorch.genjax_config(pair, batch_size=2)
    model = models.get(config.model.name).build(config.model, jax.random.key(0))
    twin = torch_twins.build(pair, config, vs_pytorch.synthetic_images(config, 2))
    ours, theirs = train.count_params(model), twin.num_params()
    assert abs(ours - theirs) <= vs_pytorch.PARAMS_TOLERANCE * ours, (pair, ours, theirs)


@pytest.mark.parametrize("pair", ["pixelcnn", "gated_pixelcnn"])
def test_pixel_twins_with_genjax_weights_give_genjax_logits_and_loss(pair):
  pytest.importorskip("torch")
  pytest.importorskip("normflows")
  from experiments.benchmarks import torch_twins, vs_pytorch  # pylint: disable=g-import-not-at-top
  config = vs_pytorch.genjax_config(pair, batch_size=2)
  config.model.update(features=8, num_layers=2, output_features=8)
  family = models.get(pair)
  model = family.build(config.model, jax.random.key(0))
  images = vs_pytorch.synthetic_images(config, 2)
  twin = torch_twins.build(pair, config, images)
  torch_twins.copy_genjax_weights(model, twin.net)
  np.testing.assert_allclose(torch_twins.pixel_logits(twin, images),
                             family.conditionals(model, images), atol=1e-5)
  loss, _ = family.loss(model, {"image": images})
  assert float(twin.loss()) == pytest.approx(float(loss), rel=1e-4)


def test_every_benchmark_imports_beside_the_others():
  """Benchmarks define their absl flags only when run as programs: importing all of
  them into one process (as tests do) registers no flag, so none collide."""
  import importlib  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  before = set(flags.FLAGS)
  folder = pathlib.Path(diffusion_samplers.__file__).parent
  names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
  assert {"compare", "diffusion_samplers", "gan_quality", "vs_pytorch"} <= set(names)
  for name in names:
    if name == "torch_twins" and importlib.util.find_spec("torch") is None:
      continue  # PyTorch itself, from the optional bench extra
    importlib.import_module(f"experiments.benchmarks.{name}")
  assert set(flags.FLAGS) == before
