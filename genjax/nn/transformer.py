"""A pre-LayerNorm decoder-only transformer stack, with a key/value cache.

`Block` is one GPT-2 block: ``x + proj(attn(ln1(x)))`` then ``x + mlp(ln2(x))``,
with causal multi-head self-attention through ``jax.nn.dot_product_attention`` (so
GPUs and TPUs get their fused kernels). `Stack` holds ``num_layers`` blocks with
stacked parameters (created by ``nnx.vmap``) and runs them as one ``lax.scan`` over
depth, so compile time does not grow with depth. It runs in two modes:

* `Stack.__call__`: a whole sequence (training, evaluation, a prompt's prefill),
  optionally returning every layer's keys and values to start a cache;
* `Stack.decode`: new positions against a cache ``[L, B, S, N, H]`` per keys and
  values, written at a slot with ``dynamic_update_slice``.

Positions are explicit ``int32[B, T]`` (rows may be left-padded), used by rotary
embeddings (``rotary=True``); learned absolute positions are added by the caller.
Tensor names carry their shapes: B batch, T query length, S key length, D width,
N heads, H head width, L layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn.dense import Dense
from genjax.nn.layers import dropout

INIT_STD = 0.02  # GPT-2's initialisation


class Cache(NamedTuple):
  """Keys and values of every layer at ``S`` slots: ``[L, B, S, N, H]`` each."""
  k: jax.Array
  v: jax.Array


def rotary(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (Su et al. 2021): rotates feature pairs by angle
  ``position * base^(-2i/H)``, so ``q . k`` depends on the positions' difference."""
  h = x_BxTxNxH.shape[-1]
  freqs_F = base ** (-jnp.arange(0, h // 2, dtype=jnp.float32) * 2.0 / h)
  angle_BxTx1xF = positions_BxT.astype(jnp.float32)[:, :, None, None] * freqs_F
  cos, sin = jnp.cos(angle_BxTx1xF), jnp.sin(angle_BxTx1xF)
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


class Block(nnx.Module):
  """One pre-LayerNorm transformer block (GPT-2).

  The residual projections are initialised with standard deviation
  ``0.02 / sqrt(2 * num_layers)`` (GPT-2), every other matrix with 0.02.
  """

  def __init__(self, width: int, num_heads: int, *, num_layers: int, mlp_ratio: int = 4,
               bias: bool = True, rotary: bool = False, rotary_base: float = 10000.0,
               dtype=jnp.float32, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads, self.rotary, self.rotary_base = num_heads, rotary, float(rotary_base)
    init = nnx.initializers.normal(INIT_STD)
    resid_init = nnx.initializers.normal(INIT_STD / math.sqrt(2 * num_layers))
    dense = lambda i, o, k: Dense(i, o, use_bias=bias, kernel_init=k, dtype=dtype, rngs=rngs)
    self.ln1 = nnx.LayerNorm(width, use_bias=bias, dtype=dtype, rngs=rngs)
    self.qkv = dense(width, 3 * width, init)
    self.proj = dense(width, width, resid_init)
    self.ln2 = nnx.LayerNorm(width, use_bias=bias, dtype=dtype, rngs=rngs)
    self.fc = dense(width, mlp_ratio * width, init)
    self.fc_proj = dense(mlp_ratio * width, width, resid_init)

  def heads(self, x_BxTxD, positions_BxT):
    """Queries, keys and values ``[B, T, N, H]`` of ``ln1(x)`` (keys and queries rotated)."""
    b, t, d = x_BxTxD.shape
    qkv = self.qkv(self.ln1(x_BxTxD)).reshape(b, t, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.rotary:
      q = rotary(q, positions_BxT, self.rotary_base)
      k = rotary(k, positions_BxT, self.rotary_base)
    return q, k, v

  def finish(self, x_BxTxD, attn_BxTxNxH, key=None, rate: float = 0.0):
    """The rest of the block after attention: projection, residuals and MLP."""
    b, t, d = x_BxTxD.shape
    k1, k2 = jax.random.split(key) if key is not None else (None, None)
    x = x_BxTxD + dropout(k1, rate, self.proj(attn_BxTxNxH.reshape(b, t, d)))
    h = self.fc_proj(jax.nn.gelu(self.fc(self.ln2(x)), approximate=True))
    return x + dropout(k2, rate, h)


def attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, mask_BxTxS=None):
  """Multi-head attention; causal (T == S) when ``mask_BxTxS`` is None."""
  if mask_BxTxS is None:
    return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, is_causal=True)
  return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH,
                                      mask=mask_BxTxS[:, None])


class Stack(nnx.Module):
  """``num_layers`` `Block`s with stacked parameters, run by one ``lax.scan``."""

  def __init__(self, num_layers: int, width: int, num_heads: int, *, rngs: nnx.Rngs,
               **block_kwargs):
    keys = jax.random.split(rngs.params(), num_layers)
    self.num_layers, self.num_heads, self.width = num_layers, num_heads, width
    self.blocks = nnx.vmap(
        lambda k: Block(width, num_heads, num_layers=num_layers,
                        rngs=nnx.Rngs(params=k), **block_kwargs),
        in_axes=0, out_axes=0)(keys)

  def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS=None, *, key=None,
               rate: float = 0.0, return_cache: bool = False):
    """Runs a whole sequence through the blocks.

    Args:
      x_BxTxD: the embedded inputs.
      positions_BxT: positions (for rotary embeddings).
      mask_BxTxS: which keys each query sees (T == S); None: causal.
      key: dropout randomness (None: no dropout).
      rate: dropout rate of the residual branches.
      return_cache: also return every layer's keys and values as a `Cache`.

    Returns:
      ``x_BxTxD`` after the last block, and the `Cache` when asked.
    """
    graphdef, state = nnx.split(self.blocks)
    keys = (jax.random.split(key, self.num_layers) if key is not None
            else jnp.zeros((self.num_layers,)))

    def body(x, xs):
      block_state, layer_key = xs
      block = nnx.merge(graphdef, block_state)
      q, k, v = block.heads(x, positions_BxT)
      a = attention(q, k, v, mask_BxTxS)
      x = block.finish(x, a, layer_key if key is not None else None, rate)
      return x, ((k, v) if return_cache else None)

    x, kv = jax.lax.scan(body, x_BxTxD, (state, keys))
    return (x, Cache(*kv)) if return_cache else x

  def decode(self, x_BxTxD, positions_BxT, cache: Cache, slot, visible_BxTxS):
    """New positions against a cache: writes their keys and values at ``slot``.

    Args:
      x_BxTxD: the embedded new inputs (T usually 1).
      positions_BxT: their positions.
      cache: keys and values ``[L, B, S, N, H]``.
      slot: the first cache slot of the new positions (a traced int).
      visible_BxTxS: which cache slots (the new ones included) each new position sees.

    Returns:
      ``(x_BxTxD, cache)`` after the last block, with the new entries written.
    """
    graphdef, state = nnx.split(self.blocks)

    def body(x, xs):
      block_state, k_cache, v_cache = xs
      block = nnx.merge(graphdef, block_state)
      q, k, v = block.heads(x, positions_BxT)
      k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), slot, 1)
      v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), slot, 1)
      a = attention(q, k_cache.astype(q.dtype), v_cache.astype(q.dtype), visible_BxTxS)
      return block.finish(x, a), (k_cache, v_cache)

    x, kv = jax.lax.scan(body, x_BxTxD, (state, cache.k, cache.v))
    return x, Cache(*kv)

  def empty_cache(self, batch: int, slots: int, dtype=jnp.float32) -> Cache:
    shape = (self.num_layers, batch, slots, self.num_heads, self.width // self.num_heads)
    return Cache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
