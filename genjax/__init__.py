"""genjax: deep generative models in JAX, as pure functions compiled with jax.jit.

Families are reached through the registry::

  import genjax
  family = genjax.models.get("vae")
  model = family.build(config.model, jax.random.key(0))
  loss, metrics = family.loss(model, batch, key)

Modules: ``models`` (registry and families), ``data`` (TFDS builders read through
grain), ``distributions`` and ``nn`` (shared pieces), ``train`` (the compiled,
data-parallel train step), ``experiment`` (train/evaluate/sample over a work
directory), ``inspection`` (cost, memory and IR of compiled functions),
``checkpoint``, ``images`` and ``metrics`` (FID, KID, precision/recall).
"""

from genjax import models

__version__ = "0.1.0"


def __getattr__(name):
  # Everything but the registry imports on first use: `import genjax` (and the
  # launchers' checks of a user's flags, before JAX starts) stays fast.
  import importlib  # pylint: disable=g-import-not-at-top
  if name in ("train", "inspection", "data", "experiment", "checkpoint", "images",
              "distributions", "nn", "metrics"):
    return importlib.import_module(f"genjax.{name}")
  raise AttributeError(f"module 'genjax' has no attribute {name!r}")
