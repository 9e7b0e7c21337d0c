"""The benchmark scripts' own logic (their numbers come from runs, not tests)."""

import math
import sys
import types
import xml.etree.ElementTree as ET

import jax
import numpy as np
import pytest

from experiments.benchmarks import diffusion_samplers
from experiments.benchmarks import vs_pytorch  # imports no PyTorch
from genjax import models
from genjax import train


def test_sampler_settings_parse_and_bad_ones_name_the_form():
  assert diffusion_samplers.parse_settings(["ddim:50", "ancestral:1000:500"]) == [
      ("ddim", 50, None), ("ancestral", 1000, 500)]
  for bad in ("ddim", "ddim:fifty", "ddim:5:6:7"):
    with pytest.raises(ValueError, match="sampler:steps"):
      diffusion_samplers.parse_settings([bad])


def test_a_call_keeps_the_saved_rows_it_does_not_redraw():
  row = lambda sampler, steps, fid: {"sampler": sampler, "steps": steps, "fid": fid}
  saved = {"step": 100, "rows": [row("ddim", 10, 5.0), row("ddim", 20, 4.0)]}
  merged = diffusion_samplers.merge_rows(saved, 100, [row("ddim", 20, 3.0),
                                                      row("ancestral", 1000, 1.0)])
  assert merged == [row("ancestral", 1000, 1.0), row("ddim", 20, 3.0), row("ddim", 10, 5.0)]
  # another checkpoint's rows are not mixed in; no file: this call's rows alone
  assert diffusion_samplers.merge_rows(saved, 200, [row("ddim", 50, 2.0)]) == [
      row("ddim", 50, 2.0)]
  assert diffusion_samplers.merge_rows(None, 100, [row("ddim", 50, 2.0)]) == [
      row("ddim", 50, 2.0)]


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
  assert vs_pytorch.parse_pairs(["vae", "glow", "vae"]) == ["vae", "glow"]
  with pytest.raises(ValueError, match="unknown pair 'pixelrnn'.*choose from pixelcnn, "
                     "gated_pixelcnn, glow, vae, dcgan, gpt, diffusion"):
    vs_pytorch.parse_pairs(["pixelcnn", "pixelrnn"])
  for name in ("torch", "normflows"):  # importing them now raises ImportError
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ValueError, match=r'pip install -e "\.\[bench\]"'):
    vs_pytorch.require_torch()


def test_vs_pytorch_needs_a_pairs_package_only_when_that_pair_runs(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # "installed"
  monkeypatch.setitem(sys.modules, "transformers", None)  # missing
  vs_pytorch.require_torch(["vae"])
  with pytest.raises(ValueError, match=r"transformers cannot be imported.*"
                     r'pip install -e "\.\[bench\]" \(or run --pairs=vae\)'):
    vs_pytorch.require_torch(["vae", "gpt"])


def test_vs_pytorch_batches_are_keyed_as_genjax_data_and_gpt_losses_near_ln_vocab():
  gpt = vs_pytorch.genjax_config("gpt", batch_size=3)
  tokens = vs_pytorch.synthetic_batch(gpt, 3)["tokens"]
  assert tokens.shape == (3, gpt.model.block_size + 1) and tokens.dtype == np.int32
  assert 0 <= tokens.min() and tokens.max() < vs_pytorch.GPT_VOCAB_SIZE
  diffusion = vs_pytorch.genjax_config("diffusion", batch_size=3)
  image = vs_pytorch.synthetic_batch(diffusion, 3)["image"]
  assert image.shape == (3, 28, 28, 1) and image.dtype == np.uint8
  uniform = math.log(vs_pytorch.GPT_VOCAB_SIZE)
  assert vs_pytorch.initial_losses_agree("gpt", gpt, uniform, uniform + 0.05)
  assert not vs_pytorch.initial_losses_agree("gpt", gpt, 2 * uniform, 2.1 * uniform)
  assert vs_pytorch.initial_losses_agree("diffusion", diffusion, 13.0, 1.0)  # not alike
  assert not vs_pytorch.initial_losses_agree("diffusion", diffusion, 13.0, math.nan)


def _require_peer(pair):
  pytest.importorskip("torch")
  for module in vs_pytorch.PAIRS[pair].modules:
    pytest.importorskip(module)


@pytest.mark.parametrize("pair", list(vs_pytorch.PAIRS))
def test_torch_twins_have_the_parameter_counts_of_the_genjax_models(pair):
  _require_peer(pair)
  from experiments.benchmarks import torch_twins  # pylint: disable=g-import-not-at-top
  config = vs_pytorch.genjax_config(pair, batch_size=2)
  model = models.get(config.model.name).build(config.model, jax.random.key(0))
  twin = torch_twins.build(pair, config, vs_pytorch.synthetic_batch(config, 2))
  ours, theirs = train.count_params(model), twin.num_params()
  assert abs(ours - theirs) <= vs_pytorch.PARAMS_TOLERANCE * ours, (pair, ours, theirs)


@pytest.mark.parametrize("pair", ["pixelcnn", "gated_pixelcnn"])
def test_pixel_twins_with_genjax_weights_give_genjax_logits_and_loss(pair):
  _require_peer(pair)
  from experiments.benchmarks import torch_twins  # pylint: disable=g-import-not-at-top
  config = vs_pytorch.genjax_config(pair, batch_size=2)
  config.model.update(features=8, num_layers=2, output_features=8)
  family = models.get(pair)
  model = family.build(config.model, jax.random.key(0))
  batch = vs_pytorch.synthetic_batch(config, 2)
  images = batch["image"]
  twin = torch_twins.build(pair, config, batch)
  torch_twins.copy_genjax_weights(model, twin.net)
  np.testing.assert_allclose(torch_twins.pixel_logits(twin, images),
                             family.conditionals(model, images), atol=1e-5)
  loss, _ = family.loss(model, {"image": images})
  assert float(twin.loss()) == pytest.approx(float(loss), rel=1e-4)


@pytest.mark.parametrize("pair, small", [
    ("gpt", dict(num_layers=2, num_heads=2, width=32)),
    ("diffusion", dict(channels=8, channel_mults=(1, 2), attention_resolutions=(14,),
                       fourier_features=())),
])
def test_gpt_and_diffusion_twins_train_on_the_batch_genjax_reads(pair, small):
  _require_peer(pair)
  from experiments.benchmarks import torch_twins  # pylint: disable=g-import-not-at-top
  config = vs_pytorch.genjax_config(pair, batch_size=2)
  config.model.update(small)
  batch = vs_pytorch.synthetic_batch(config, 2)
  family = models.get(pair)
  genjax_loss, _ = family.loss(family.build(config.model, jax.random.key(0)), batch,
                               jax.random.key(1))
  twin = torch_twins.build(pair, config, batch)
  first, second = float(twin.step()), float(twin.step())
  assert vs_pytorch.initial_losses_agree(pair, config, float(genjax_loss), first)
  assert math.isfinite(second) and second != first


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
