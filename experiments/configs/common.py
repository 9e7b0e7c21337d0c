"""Settings shared by every experiment config (training loop, data, optimizer)."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The fields every experiment has; a family config fills ``model`` and variants."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 64                # global batch, split over all devices and hosts

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"           # genjax.data.DATASETS
  c.data.view = "binarized"        # "binarized" (dynamic in training) or "8bit"
  c.data.data_dir = ""             # prepared-data cache; "" = $GENJAX_DATA_DIR or ~/.cache/genjax
  c.data.mnist_dir = ""            # directory of the four MNIST IDX files; "" = $GENJAX_MNIST_DIR or download

  c.model = ml_collections.ConfigDict()
  c.model.name = ""
  c.model.input_shape = ()         # (H, W, C); () = the data set's shape

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"  # constant | cosine | linear
  c.optimizer.warmup_steps = 100
  c.optimizer.final_lr_fraction = 0.0
  c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping
  c.optimizer.weight_decay = 0.0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1                  # devices each large parameter is split over (1: replicated)

  c.log_every = 100                # steps between metric rows
  c.eval_every = 0                 # steps between test-split evaluations (0: only at the end)
  c.eval_batch_size = 500
  c.checkpoint_every = 1000        # steps between checkpoints (and one at the end)
  c.keep_checkpoints = 3
  c.sample_every = 0               # steps between sample grids (0: only at the end)
  c.num_samples = 64               # images per sample grid
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to a run of seconds on a CPU (digits data)."""
  c.data.name = "digits"
  c.total_steps = 20
  c.batch_size = 16
  c.log_every = 5
  c.eval_every = 10
  c.eval_batch_size = 100
  c.checkpoint_every = 10
  c.sample_every = 10
  c.num_samples = 16
  c.optimizer.warmup_steps = 2
  return c


def unknown_variant(name: str, variant: str, variants) -> ValueError:
  """The error for a variant that ``experiments/configs/<name>.py`` does not have."""
  return ValueError(f"unknown variant {variant!r} of {name}; choose one of "
                    f"{', '.join(variants)} (experiments/configs/{name}.py:<variant>)")
