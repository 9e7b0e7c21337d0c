"""The model registry: every family registers a module under a name.

A family is a Python module that provides the protocol of ``DESIGN.md``:

* ``build(config, key) -> nnx.Module``: the model, from ``config`` (the ``model``
  block of an experiment config; ``config.name`` names the family and
  ``config.input_shape`` is ``(H, W, C)`` for image models).
* ``loss(model, batch, key) -> (scalar, metrics)``: the training loss and a dict of
  scalar metrics. ``batch = {"image": uint8[B, H, W, C], "label": int32[B]}``.
* ``log_likelihood(model, batch, key, **kwargs) -> float[B]``: log p(x) in nats per
  example (exact for flows and autoregressive models, a lower bound for the VAE and
  diffusion; GANs raise ``NotImplementedError`` with a reason).
* ``sample(model, key, num, **kwargs) -> uint8[num, H, W, C]``: images in the data's
  own space (``{0, 1}`` for binarized data, ``0..255`` for 8-bit data).

Optional hooks, looked up with ``getattr`` by the generic training and launcher code:

* ``initialize(model, batch, key) -> None``: data-dependent initialisation (e.g.
  ActNorm) run once on the first global training batch, before step 0, traced
  inside one compiled function (so statistics are the global batch's on any
  number of devices and hosts).
* ``load_pretrained(model) -> None``: loads parts trained elsewhere (e.g. DALL-E's
  frozen image tokenizer) on the host, on a fresh start, before ``initialize``;
  every host reads the same files.
* ``make_optimizer(model, optimizer_config, total_steps) -> nnx.Optimizer | dict``:
  defaults to one ``nnx.Optimizer(model, genjax.train.make_tx(...), wrt=nnx.Param)``;
  a multi-player family (a GAN) returns one optimizer per player.
* ``update(model, optimizer, batch, key) -> metrics``: one in-place training update;
  defaults to ``genjax.train.default_update`` (a gradient step on ``loss``). Build it
  from ``genjax.train.gradient_step``, which skips an optimizer step whose loss or
  gradients are not finite.
* ``eval_metrics(model, batch, key) -> dict[str, float[B]]``: extra per-example
  numbers for ``experiments.evaluate`` (e.g. the VAE's ELBO terms); entries of
  shape ``[B, K]`` are summed over the evaluation and passed to
* ``eval_summary(totals) -> dict[str, float]``: numbers of the whole evaluation
  from those sums (e.g. a tokenizer's codebook perplexity).
* ``prepare_run(config, workdir) -> config``: run before training starts, for a
  family that depends on another run (DALL-E trains its image tokenizer first).
* ``visualizations(model, key, batch) -> dict[str, uint8[N, H, W, C]]``: extra image
  sets that ``experiments.sample`` writes as PNG grids.
* ``LIKELIHOOD``: a string describing ``log_likelihood`` (default exact), or None
  for a family without one (a GAN): evaluation then reports sample metrics only.
* ``forward`` / ``inverse`` (flows) and ``conditionals`` (autoregressive models).
"""

from __future__ import annotations

import importlib
import numbers
import types

# name -> module path. Families are imported lazily so that importing genjax stays cheap.
_REGISTRY: dict[str, str] = {
    "vae": "genjax.models.vae",
    "realnvp": "genjax.models.realnvp",
    "glow": "genjax.models.glow",
    "pixelcnn": "genjax.models.pixelcnn",
    "gated_pixelcnn": "genjax.models.gated_pixelcnn",
    "pixelrnn": "genjax.models.pixelrnn",
    "pixelcnn_pp": "genjax.models.pixelcnn_pp",
    "dcgan": "genjax.models.dcgan",
    "gpt": "genjax.models.gpt",
    "dvae": "genjax.models.dvae",
    "dalle": "genjax.models.dalle",
    "diffusion": "genjax.models.diffusion",
}


def register(name: str, module_path: str) -> None:
  """Registers a family module (importable path) under ``name``."""
  if name in _REGISTRY and _REGISTRY[name] != module_path:
    raise ValueError(f"model {name!r} is already registered as {_REGISTRY[name]!r}")
  _REGISTRY[name] = module_path


def names() -> list[str]:
  """The registered family names, sorted."""
  return sorted(_REGISTRY)


def check_name(name: str) -> None:
  """Raises ``KeyError``, with the list of known names, unless ``name`` is
  registered (without importing the family)."""
  if name not in _REGISTRY:
    raise KeyError(
        f"unknown model {name!r}; known models: {', '.join(names())}. "
        "Set config.model.name to one of them.")


def get(name: str) -> types.ModuleType:
  """Returns the family module registered as ``name``.

  Raises:
    KeyError: with the list of known names, when ``name`` is not registered.
  """
  check_name(name)
  return importlib.import_module(_REGISTRY[name])


def parse_fields(config, defaults: dict, choices: dict, *, image: bool = True) -> dict:
  """Validates the fields every family has and fills the defaults.

  Checks that ``config`` (the ``model`` block, a ``ConfigDict`` or dict) names no
  unknown field, that ``name`` is the family's, that each string field of
  ``choices`` has an allowed value and, for an image family, that ``input_shape``
  is ``(H, W, C)``; the family then checks its own fields.

  Args:
    config: the ``model`` block.
    defaults: every known field and its default (``defaults["name"]`` is the family).
    choices: allowed values of the string fields.
    image: whether the family has an ``input_shape`` (token models do not).

  Returns:
    A dict of every field, with ``input_shape`` a tuple of ints.

  Raises:
    ValueError: naming the field and what is allowed.
  """
  family = defaults["name"]
  unknown = set(config.keys()) - set(defaults)
  if unknown:
    raise ValueError(f"unknown field(s) config.model.{', config.model.'.join(sorted(unknown))} "
                     f"for {family}; known fields: {', '.join(defaults)}")
  cfg = {k: (config.get(k) if config.get(k) is not None else v) for k, v in defaults.items()}
  if cfg["name"] != family:
    raise ValueError(f"config.model.name is {cfg['name']!r}, expected {family!r}")
  for name, allowed in choices.items():
    if cfg[name] not in allowed:
      raise ValueError(f"config.model.{name} must be one of {', '.join(map(repr, allowed))}; "
                       f"got {cfg[name]!r}")
  if not image:
    return cfg
  shape = cfg["input_shape"]
  if (shape is None or len(shape) != 3
      or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape)):
    raise ValueError(f"config.model.input_shape must be (H, W, C) with 3 positive ints, "
                     f"got {shape!r}")
  cfg["input_shape"] = tuple(int(s) for s in shape)
  return cfg


def check_field(ok: bool, name: str, want: str, value) -> None:
  """Raises ``ValueError("config.model.<name> must be <want>; got <value>")`` unless ``ok``."""
  if not ok:
    raise ValueError(f"config.model.{name} must be {want}; got {value!r}")


def check_image_batch(batch, input_shape, *, binary: bool | None = None) -> None:
  """Raises a clear error when ``batch`` does not fit an image model.

  Runs at trace time (shapes and dtypes are static), so it costs nothing in a
  compiled step.

  Args:
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    input_shape: the ``(H, W, C)`` the model was built for.
    binary: unused by the check itself; kept for error messages of binary models.
  """
  if not isinstance(batch, dict) or "image" not in batch:
    raise TypeError(
        "a batch must be a dict with an 'image' entry of dtype uint8 and shape "
        f"[B, {', '.join(map(str, input_shape))}]; got {type(batch).__name__}"
        + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""))
  image = batch["image"]
  shape = tuple(getattr(image, "shape", ()))
  if len(shape) != 4 or shape[1:] != tuple(input_shape):
    raise ValueError(
        f"batch['image'] has shape {shape}, but the model was built for images of "
        f"shape (H, W, C) = {tuple(input_shape)}: expected [B, "
        f"{', '.join(map(str, input_shape))}]. Build the model with "
        "config.model.input_shape equal to the data's shape.")
  if getattr(image, "dtype", None) != "uint8":
    raise TypeError(
        f"batch['image'] has dtype {image.dtype}, expected uint8 (binarized images "
        "hold 0/1, 8-bit images 0..255); convert with .astype(np.uint8) or use the "
        "genjax.data pipelines.")
