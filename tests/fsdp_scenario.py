"""Parameters split over ``fsdp`` on 8 CPU devices (not a test module; run by
tests/fsdp_test.py in its own process, since the test session has 4 devices).

  JAX_NUM_CPU_DEVICES=8 python tests/fsdp_scenario.py OUT_DIR

A tiny GPT trained 2 steps on a (data 2, fsdp 4) mesh against the same steps on a
(data 8) mesh with replicated parameters; the split state saved with orbax and
restored onto a (4, 2) mesh and onto one device; one more step on the (4, 2) mesh. Writes
``OUT_DIR/result.json`` with the largest differences and the placements seen.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
from flax import nnx

from genjax import checkpoint as ckpt_lib
from genjax import train
from genjax.models import gpt

V, BLOCK = 32, 16


def _configs():
  model = ml_collections.ConfigDict(dict(name="gpt", vocab_size=V, block_size=BLOCK,
                                         num_layers=2, num_heads=2, width=64))
  # Adam's eps well above the float32 noise of a gradient: with eps=1e-8 a
  # near-zero gradient's update is its sign, which the order of the devices'
  # summation flips (1.3e-4 apart after 2 steps; 1.6e-7 with this eps)
  opt = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-2, schedule="constant", warmup_steps=0,
      grad_clip_norm=1.0, weight_decay=0.1, b1=0.9, b2=0.99, eps=1e-3))
  return model, opt


def _steps(graphdef, state, mesh, batches, shardings=None):
  step = train.compile_train_step(gpt, graphdef, mesh, shardings)
  state = jax.device_put(state, shardings or train.state_shardings(state, mesh))
  losses = []
  for batch in batches:
    state, metrics = step(state, train.shard_batch(batch, mesh), jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return state, losses


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run(out_dir: pathlib.Path) -> dict:
  assert len(jax.devices()) == 8, jax.devices()
  rng = np.random.default_rng(0)
  batches = [{"tokens": rng.integers(0, V, (16, BLOCK + 1)).astype(np.int32)}
             for _ in range(3)]
  model_config, opt_config = _configs()
  graphdef, state0 = nnx.split(train.create_train_state(
      gpt, model_config, opt_config, 10, jax.random.key(0)))
  state0 = jax.device_get(state0)  # host copies: every placement below is a fresh one

  replicated, rep_losses = _steps(graphdef, state0, train.make_mesh(fsdp=1), batches[:2])
  mesh = train.make_mesh(fsdp=4)
  shardings = train.state_shardings(state0, mesh)
  split, split_losses = _steps(graphdef, state0, mesh, batches[:2], shardings)
  step_state_diff = _max_diff(split, replicated)

  specs = [s.spec for s in jax.tree.leaves(shardings)]
  leaves = jax.tree.leaves(split)
  sharded = [x for x, s in zip(leaves, specs) if "fsdp" in s]
  shard_fraction = [x.addressable_shards[0].data.size / x.size for x in sharded]
  split_bytes = sum(x.addressable_shards[0].data.nbytes for x in leaves)
  full_bytes = sum(x.nbytes for x in leaves)

  ckpt = ckpt_lib.Checkpointer(out_dir / "ckpt")
  ckpt.save(2, split, {"position": 2}, wait=True)
  restored = {}
  for name, target in (("mesh_4x2", train.make_mesh(fsdp=2)),
                       ("one_device", train.make_mesh(jax.devices()[:1]))):
    abstract = ckpt_lib.abstract_like(state0, train.state_shardings(state0, target))
    state, _, _ = ckpt.restore(abstract)
    placed = all(x.sharding == s.sharding for x, s in zip(jax.tree.leaves(state),
                                                            jax.tree.leaves(abstract)))
    restore_diff = _max_diff(state, split)  # before the step below donates ``state``
    restored[name] = dict(placed=placed, restore_diff=restore_diff,
                          mesh=dict(target.shape))
    if name == "mesh_4x2":  # one more step on the new mesh, and on the original one
      more, losses = _steps(graphdef, state, target, batches[2:],
                            train.state_shardings(state0, target))
      restored[name].update(loss=losses[0], state=more)
  ckpt.close()
  cont, cont_losses = _steps(graphdef, split, mesh, batches[2:], shardings)  # donates split

  return dict(
      num_leaves=len(leaves), num_sharded=len(sharded), shard_fraction=shard_fraction,
      split_bytes_per_device=split_bytes, full_bytes=full_bytes,
      step_loss_diff=max(abs(a - b) for a, b in zip(rep_losses, split_losses)),
      step_state_diff=step_state_diff,
      restored={k: dict(v, state=None, continued_diff=_max_diff(v["state"], cont),
                        continued_loss_diff=abs(v["loss"] - cont_losses[0]))
                if "state" in v else v for k, v in restored.items()})


if __name__ == "__main__":
  out = pathlib.Path(sys.argv[1])
  result = run(out)
  (out / "result.json").write_text(json.dumps(result, indent=2))
