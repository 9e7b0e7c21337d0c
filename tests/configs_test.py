"""Every variant of every experiment config builds its model and optimizer."""

import importlib
import pathlib

import jax
import pytest
from flax import nnx

from genjax import models
from genjax import rundir
from genjax import train as train_lib

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[1] /
                                  "experiments" / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common"))
CASES = [(name, variant) for name in CONFIGS
         for variant in importlib.import_module(f"experiments.configs.{name}").VARIANTS]


def test_every_model_family_has_a_config():
  assert set(CONFIGS) == set(models.names())


def _stand_in_corpus(config, directory):
  """Text configs read a directory: a few tiny documents with the held-out names."""
  names = list(config.data.holdout) + [f"doc_{i}" for i in range(4)]
  directory.mkdir(exist_ok=True)
  for i, n in enumerate(names):
    (directory / f"{n}.txt").write_text(f"Document {i}: the quick brown fox.\n" * 20)
  config.data.text_dir = str(directory)


@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}:{v}" for n, v in CASES])
def test_variant_validates_and_builds(name, variant, tmp_path, data_dir):
  """Validation, then the model and optimizer state as shapes only (no compute)."""
  config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
  if config.data.name == "text":
    _stand_in_corpus(config, tmp_path / "corpus")
    config.data.data_dir = str(data_dir)
  config = rundir.prepare_config(config)
  assert config.model.name == name
  assert config.total_steps > 0 and config.batch_size > 0
  family = models.get(name)
  state = nnx.eval_shape(lambda: train_lib.create_train_state(
      family, config.model, config.optimizer, config.total_steps, jax.random.key(0)))
  assert train_lib.count_params(state.model) > 0


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_lists_the_known_ones(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  with pytest.raises(ValueError, match="unknown variant 'nope'") as err:
    module.get_config("nope")
  assert all(v in str(err.value) for v in module.VARIANTS)
