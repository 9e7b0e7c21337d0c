"""Compiled, data-parallel training written once against the model protocol.

The training state is an NNX module (`TrainState`) that holds the model, its
optimizer(s) and a step counter. It is split into ``(graphdef, state)`` once; the
train step is a pure function ``(state, batch, key) -> (state, metrics)`` that
merges inside a plain ``jax.jit`` with the state donated (the functional training
loop of the Flax performance guide). Parallelism is a ``Mesh`` with ``data`` and
``fsdp`` axes: the batch is split over both, the parameters and optimizer state
are replicated, or split over ``fsdp`` by one rule (`fsdp_spec`), and XLA's
partitioner inserts the gradient all-reduce and the parameter all-gathers.

A family customises training through optional hooks (see ``genjax.models``):
``make_optimizer`` (several players, e.g. a GAN's generator and discriminator) and
``update`` (the in-place update of one step). Everything else (compilation,
sharding, the non-finite guard, metrics, checkpoints) is shared.
"""

from __future__ import annotations

import math
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


class Step(nnx.Variable):
  """The global training step, kept in the state (and in checkpoints)."""


class TrainState(nnx.Module):
  """Model, optimizer(s) and step counter: everything a checkpoint holds.

  Attributes:
    model: the family's NNX module.
    opt: an ``nnx.Optimizer``, or a dict of them for multi-player families.
    step: number of updates applied so far.
  """

  def __init__(self, model: nnx.Module, opt: Any):
    self.model = model
    self.opt = nnx.data(opt) if isinstance(opt, dict) else opt
    self.step = Step(jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------- moving averages


class EMAWeight(nnx.Variable):
  """A weight of a moving-average copy of a module (not a trained ``nnx.Param``).

  The copy lives in the model, so checkpoints keep it; the default optimizer
  (``wrt=nnx.Param``) neither differentiates nor updates it.
  """


def ema_copy(module: nnx.Module) -> nnx.Module:
  """A copy of ``module`` whose ``nnx.Param`` leaves are `EMAWeight` variables."""
  return nnx.map(lambda _, v: EMAWeight(jnp.copy(v[...])) if isinstance(v, nnx.Param) else v,
                 module)


def ema_decay(decay: float, warmup: bool, step: jax.Array) -> jax.Array:
  """The decay of the ``step``-th update: ``min(decay, (1 + t) / (10 + t))`` with warm-up.

  Without the warm-up the decay is ``decay`` throughout; with 0.999 the initial
  random weights would then still hold 0.999^750 = 47 % of the average after 750
  updates.

  References:
    The ``num_updates`` rule of TensorFlow's ``ExponentialMovingAverage``.
  """
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema: nnx.Module, module: nnx.Module, decay: jax.Array) -> None:
  """``ema <- decay * ema + (1 - decay) * module`` in place (`EMAWeight` <- ``nnx.Param``)."""
  is_var = lambda x: isinstance(x, nnx.Variable)
  old = jax.tree.leaves(nnx.state(ema, EMAWeight), is_leaf=is_var)
  new = jax.tree.leaves(nnx.state(module, nnx.Param), is_leaf=is_var)
  for e, p in zip(old, new, strict=True):
    e.set_value(decay * e[...] + (1.0 - decay) * p[...])


# --------------------------------------------------------------------------- optax


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  """A learning-rate schedule from ``config.optimizer``.

  ``cfg.schedule`` is ``constant``, ``cosine`` (linear warm-up then cosine decay to
  ``cfg.final_lr_fraction`` of the peak) or ``linear`` (warm-up then linear decay).
  """
  peak = float(cfg.learning_rate)
  warmup = int(cfg.get("warmup_steps", 0))
  kind = cfg.get("schedule", "constant")
  final = peak * float(cfg.get("final_lr_fraction", 0.0))
  decay_steps = max(int(total_steps) - warmup, 1)
  if kind == "constant":
    if warmup:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
          [warmup])
    return optax.constant_schedule(peak)
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, warmup + decay_steps, end_value=final)
  if kind == "linear":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)),
         optax.linear_schedule(peak, final, decay_steps)], [max(warmup, 1)])
  raise ValueError(
      f"unknown config.optimizer.schedule {kind!r}; choose constant, cosine or linear")


def make_tx(cfg, total_steps: int, weight_decay_mask=None) -> optax.GradientTransformation:
  """An optax optimizer from ``config.optimizer``: clipping, then Adam(W) or SGD.

  Args:
    cfg: ``name`` (``adam``, ``adamw``, ``sgd``), ``learning_rate``, ``schedule``,
      ``warmup_steps``, ``grad_clip_norm`` (0 disables), ``weight_decay``, ``b1``,
      ``b2``, ``eps``, ``momentum``.
    total_steps: length of the run, for decaying schedules.
    weight_decay_mask: for ``adamw``, a function of the parameters returning which
      leaves decay (optax's ``mask``); None decays every parameter.

  Returns:
    The gradient transformation.
  """
  lr = make_schedule(cfg, total_steps)
  name = cfg.get("name", "adam")
  if name == "adam":
    opt = optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                     eps=cfg.get("eps", 1e-8))
  elif name == "adamw":
    opt = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                      eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0),
                      mask=weight_decay_mask)
  elif name == "sgd":
    opt = optax.sgd(lr, momentum=cfg.get("momentum", None) or None)
  else:
    raise ValueError(f"unknown config.optimizer.name {name!r}; choose adam, adamw or sgd")
  clip = float(cfg.get("grad_clip_norm", 0.0) or 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt


# ------------------------------------------------------------------ state and step


def create_train_state(family: types.ModuleType, model_config, optimizer_config,
                       total_steps: int, key: jax.Array) -> TrainState:
  """Builds the model with ``family.build`` and its optimizer(s)."""
  model = family.build(model_config, key)
  make_opt = getattr(family, "make_optimizer", None)
  if make_opt is not None:  # e.g. one optimizer per player of a GAN
    opt = make_opt(model, optimizer_config, total_steps)
  else:
    opt = nnx.Optimizer(model, make_tx(optimizer_config, total_steps), wrt=nnx.Param)
  return TrainState(model, opt)


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves of a pytree (of arrays or NNX variables)."""
  return optax.global_norm(jax.tree.leaves(tree))


def gradient_step(module: nnx.Module, opt: nnx.Optimizer,
                  loss_fn: Callable[[nnx.Module], tuple[jax.Array, Metrics]]
                  ) -> tuple[jax.Array, Metrics, Metrics]:
  """One optimizer step of ``opt`` on the parameters of ``module``, in place.

  The building block of every ``update``: the default one applies it once to the
  whole model, a GAN once per player (each player with its own optimizer).

  The step is skipped (parameters, optimizer state and ``opt.step`` unchanged) when
  the loss, an auxiliary metric or a gradient is not finite: finiteness is computed
  before the update, which runs under ``lax.cond``, so no copy of the old state is
  kept beside the new one and the donated state is updated in place (a select of
  old against new state after the update kept both alive).

  Args:
    module: the NNX module whose ``nnx.Param`` leaves ``opt`` updates.
    opt: an ``nnx.Optimizer`` made for ``module``.
    loss_fn: ``module -> (loss, aux)``; differentiated with respect to the
      optimizer's ``wrt`` variables only (a frozen part, e.g. DALL-E's image
      tokenizer, is neither differentiated nor updated).

  Returns:
    ``(loss, aux, norms)``; ``norms`` holds ``grad_norm``, ``param_norm`` and
    ``update_norm`` (the L2 norm of the parameter change the optimizer computed).
  """
  wrt = opt.wrt
  (loss, aux), grads = nnx.value_and_grad(
      loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(module)
  finite = _all_finite(jax.tree.leaves((loss, aux, grads)))
  params = nnx.as_pure(nnx.state(module, wrt, graph=opt.graph))
  opt_state = nnx.as_pure(opt.opt_state)

  def apply(params, opt_state, grads):
    updates, new_opt_state = opt.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state, global_norm(updates)

  def skip(params, opt_state, grads):
    del grads
    return params, opt_state, jnp.zeros((), jnp.float32)

  new_params, new_opt_state, update_norm = jax.lax.cond(
      finite, apply, skip, params, opt_state,
      nnx.as_pure(nnx.state(grads, wrt, graph=opt.graph)))
  nnx.update(module, new_params)
  nnx.update(opt.opt_state, nnx.state(new_opt_state, graph=opt.graph))
  opt.step.set_value(opt.step[...] + finite.astype(opt.step[...].dtype))
  norms = {"grad_norm": global_norm(grads), "param_norm": global_norm(new_params),
           "update_norm": update_norm}
  return loss, aux, norms


def default_update(family: types.ModuleType, model: nnx.Module,
                   opt: nnx.Optimizer, batch: Batch, key: jax.Array) -> Metrics:
  """One gradient step on ``family.loss``, in place; the default ``update`` hook.

  Returns the family's metrics plus ``grad_norm``, ``param_norm`` and
  ``update_norm`` (see `gradient_step`).
  """
  loss, metrics, norms = gradient_step(
      model, opt, lambda m: family.loss(m, batch, key))
  return {**metrics, "loss": loss, **norms}


def make_train_step(family: types.ModuleType, graphdef: nnx.GraphDef
                    ) -> Callable[[nnx.State, Batch, jax.Array], tuple[nnx.State, Metrics]]:
  """The pure train step ``(state, batch, key) -> (state, metrics)``.

  ``key`` is the run's training key; the step uses ``fold_in(key, step)``, so a
  resumed run draws exactly the randomness it would have drawn. Each optimizer
  step skips itself when its loss or gradients are not finite (`gradient_step`),
  and the step counter advances only when every metric is finite: a step whose
  loss or gradients are not finite leaves the state of a single-optimizer family
  as it was. ``metrics["finite"]`` is 0 when any metric is not finite (also when
  the update itself overflowed, e.g. ``param_norm``), and the host then stops
  without saving. No copy of the old state is kept, so the donated state is
  updated in place. Compile it with `compile_train_step`.
  """
  update = getattr(family, "update", None)

  def step(state: nnx.State, batch: Batch, key: jax.Array):
    ts = nnx.merge(graphdef, state)
    key = jax.random.fold_in(key, ts.step.value)
    if update is not None:
      metrics = update(ts.model, ts.opt, batch, key)
    else:
      metrics = default_update(family, ts.model, ts.opt, batch, key)
    finite = _all_finite(list(metrics.values()))
    ts.step.value = ts.step.value + finite.astype(ts.step.value.dtype)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    metrics["finite"] = finite.astype(jnp.float32)
    return nnx.state(ts), metrics

  return step


def compile_train_step(family, graphdef, mesh: Mesh | None = None, state_sharding=None):
  """``jax.jit`` of `make_train_step` with the state donated.

  With a mesh, the batch is split over every device (`batch_sharding`) and the
  state is placed as ``state_sharding`` says (a pytree of shardings, or one for
  every leaf; default replicated, see `state_shardings` for sharded parameters).
  """
  step = make_train_step(family, graphdef)
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  replicated = NamedSharding(mesh, P())
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(step, donate_argnums=0,
                 in_shardings=(state_sharding, batch_sharding(mesh), replicated),
                 out_shardings=(state_sharding, replicated))


# --------------------------------------------------------------------------- mesh

BATCH_AXES = ("data", "fsdp")  # a batch is split over every device of the mesh
# Attributes holding layers stacked by nnx.vmap (a leading axis scanned over): the
# stacked axis is never sharded, so a scan step reads its layer without a gather.
STACKED = ("blocks", "steps")
FSDP_MIN_SIZE = 2 ** 12  # smaller leaves stay replicated


def make_mesh(devices=None, fsdp: int = 1) -> Mesh:
  """A ``(data, fsdp)`` mesh over ``devices`` (default: every device of every host).

  Batches are split over both axes; parameters and optimizer state are split over
  ``fsdp`` (`state_shardings`), replicated over ``data``. ``fsdp=1`` is plain data
  parallelism.

  Raises:
    ValueError: ``fsdp`` does not divide the number of devices.
  """
  devices = jax.devices() if devices is None else list(devices)
  fsdp = int(fsdp)
  if fsdp < 1 or len(devices) % fsdp:
    sizes = [d for d in range(1, len(devices) + 1) if len(devices) % d == 0]
    raise ValueError(f"config.mesh.fsdp={fsdp} must divide the {len(devices)} devices; "
                     f"set it to one of {', '.join(map(str, sizes))}")
  return Mesh(np.asarray(devices).reshape(-1, fsdp), ("data", "fsdp"),
              axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over every device of ``mesh``."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(path: tuple[str, ...], shape: tuple[int, ...], fsdp: int) -> P:
  """The sharding rule of every parameter and optimizer-state leaf, in one place.

  A leaf of at least `FSDP_MIN_SIZE` elements is split over the ``fsdp`` mesh axis
  along its largest axis that ``fsdp`` divides, the stacked layer axis of `STACKED`
  modules excepted; everything else is replicated. Adam's moments have their
  parameter's shape, so they follow it.

  Args:
    path: the leaf's names in the train state (e.g. ``("model", "stack", "blocks",
      "mlp_in", "kernel", "value")``).
    shape: its shape.
    fsdp: the size of the ``fsdp`` mesh axis.

  Returns:
    A ``PartitionSpec`` (``P()`` when replicated).
  """
  if fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
    return P()
  first = 1 if any(name in STACKED for name in path) else 0
  axes = [i for i in range(first, len(shape)) if shape[i] % fsdp == 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda i: (shape[i], -i))
  return P(*([None] * axis + ["fsdp"]))


def state_shardings(state, mesh: Mesh):
  """A ``NamedSharding`` for every leaf of ``state`` (arrays or shape structs), by
  `fsdp_spec`: replicated when the mesh's ``fsdp`` axis has size 1."""
  fsdp = mesh.shape.get("fsdp", 1)
  def spec(path, leaf):
    names = tuple(path_name(k) for k in path)
    return NamedSharding(mesh, fsdp_spec(names, tuple(leaf.shape), fsdp))
  return jax.tree_util.tree_map_with_path(spec, state)


def path_name(key) -> str:
  """A pytree path entry as a name: dict key, attribute or sequence index alike."""
  for field in ("key", "name", "idx"):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
  """Places this host's batch on the mesh, split over every device.

  Each host passes its own rows of the global batch (the data pipelines give
  each host disjoint rows); the result is one global array per entry.
  """
  sharding = batch_sharding(mesh)
  n = mesh.devices.size
  out = {}
  for name, x in batch.items():
    x = np.asarray(x)
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % n:
      raise ValueError(
          f"the global batch size {global_rows} is not divisible by the {n} devices of "
          f"the mesh; set config.batch_size to a multiple of {n}")
    out[name] = jax.make_array_from_process_local_data(sharding, x)
  return out


def replicate(tree, mesh: Mesh):
  """Places every leaf of ``tree`` on all devices of ``mesh`` (every host must pass
  the same values)."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


@jax.jit
def _all_finite(leaves) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves]))


def is_finite_tree(tree) -> bool:
  """True when every floating leaf of ``tree`` is finite (a host sync).

  Compiled once per tree structure and shapes (a module-level ``jax.jit``).
  """
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return True
  return bool(_all_finite(leaves))


def count_params(model: nnx.Module) -> int:
  """Number of scalar parameters (``nnx.Param`` leaves) of ``model``."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))

