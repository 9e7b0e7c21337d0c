"""Orbax checkpoints of the training state and the data iterator's position."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

# Orbax writes a replicated array in parallel from its replicas, each copying a slice
# of it off its device; every slice is an eager op compiled once per shape and
# device, which for a model's many small leaves costs more than the parallel write
# gains (on 4 CPU devices, 104 of the 232 compilations of the VAE, Glow and DCGAN
# smoke runs, 9 of 40 s, counted with JAX's compile events). Arrays smaller than
# this per replica are written whole by one replica.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _state_handler() -> ocp.StandardCheckpointHandler:
  """orbax's standard handler, with `MIN_REPLICA_SLICE_BYTES` for jax.Array leaves
  (the plain standard handler where this orbax version does not allow it)."""
  handler = ocp.StandardCheckpointHandler()
  th = ocp.type_handlers
  try:
    default = th.get_type_handler(jax.Array)
    arrays = th.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=getattr(default, "_array_metadata_store", None))
    registry = th.create_type_handler_registry(
        *[(t, th.get_type_handler(t)) for t in (int, float, bytes, np.number, np.ndarray,
                                                str)], (jax.Array, arrays))
    if hasattr(handler, "_impl"):
      handler._impl = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)  # pylint: disable=protected-access
  except (TypeError, ValueError, AttributeError):
    pass
  return handler


class Checkpointer:
  """Saves and restores ``(train state, data iterator state)`` under one directory.

  The newest ``max_to_keep`` checkpoints are kept. A checkpoint is only written
  from a finite state (`save` refuses otherwise), and orbax writes each one to a
  temporary directory first, so a crash never leaves a corrupt newest checkpoint.

  Saves are asynchronous: `save` returns once the state is copied to host memory
  (the caller may then donate or delete its arrays) and orbax writes the files in
  a background thread while training goes on. Every read (`latest_step`,
  `all_steps`, `restore`) and `close` first waits for a save in flight, so they
  see what was saved; a process killed during a write keeps the previous
  checkpoint as the newest.
  """

  def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_handlers={"state": _state_handler(),
                       "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    """The newest saved step, or None (after any save in flight is written)."""
    self.wait()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self.wait()
    return list(self._manager.all_steps())

  def wait(self) -> None:
    """Blocks until a save in flight is written (committed) to disk."""
    self._manager.wait_until_finished()

  def path(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def save(self, step: int, state: Any, data_state: dict | None = None,
           wait: bool = False) -> None:
    """Starts writing a checkpoint of a finite state (refused otherwise).

    Returns once the state is on the host (its arrays may then be donated or
    deleted); the files are written in the background, or before returning
    with ``wait=True``. A save first waits for the one before it.
    """
    from genjax.train import is_finite_tree  # pylint: disable=g-import-not-at-top
    if not is_finite_tree(state):
      raise FloatingPointError(
          f"refusing to checkpoint a non-finite state at step {step}")
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(dict(data_state or {}))), force=True)
    if wait:
      self.wait()

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, dict, int]:
    """Restores ``(state, data_state, step)``; ``step`` defaults to the newest.

    Args:
      abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (with shardings) shaped
        like the saved state, e.g. from ``nnx.eval_shape``; restoring against it
        gives back optimizer states as their own types.
      step: which checkpoint; the newest when None.
    """
    self.wait()
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    mismatch = _mismatch(self._manager.item_metadata(step).state, abstract_state)
    if mismatch:  # checked before orbax starts restoring, which fails noisily
      raise ValueError(
          f"the checkpoint at step {step} in {self.directory} does not fit the "
          f"model and optimizer this config builds ({mismatch}). It was written by "
          "a different config: use a new --workdir, or launch with the config the "
          "run was trained with.")
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"] or {}), step

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _mismatch(saved_metadata: Any, abstract_state: Any, limit: int = 6) -> str:
  """The entries whose presence or shape differ between a checkpoint and a state
  (``""`` when they fit)."""
  from genjax.train import path_name  # pylint: disable=g-import-not-at-top
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(path_name(k) for k in path): tuple(leaf.shape)
            for path, leaf in leaves}
  saved, wanted = shapes(getattr(saved_metadata, "tree", saved_metadata)), shapes(
      abstract_state)
  diffs = [f"{k}: only in the checkpoint" for k in saved.keys() - wanted.keys()]
  diffs += [f"{k}: not in the checkpoint" for k in wanted.keys() - saved.keys()]
  diffs += [f"{k}: saved {saved[k]}, now {wanted[k]}"
            for k in saved.keys() & wanted.keys() if saved[k] != wanted[k]]
  diffs.sort()
  more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return "; ".join(diffs[:limit]) + more


def abstract_like(state: Any, sharding=None) -> Any:
  """``jax.ShapeDtypeStruct`` leaves for ``state``, placed as ``sharding`` says (one
  sharding for every leaf, or a pytree of them shaped like ``state``; default the
  leaves' own): a checkpoint restored against it lands on those devices, whatever
  the mesh it was saved from."""
  struct = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: struct(x, sharding or getattr(x, "sharding", None)),
                        state)
  return jax.tree.map(struct, state, sharding)
