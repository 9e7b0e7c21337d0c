"""Dense layers whose gradients take XLA:CPU's fast matrix-product path.

XLA's CPU backend hands a matrix product to its fast library (YNNPACK) only in the
canonical layout: the left operand contracted on its last dimension, neither
operand column-major (``xla/backends/cpu/ynn_support.cc``). The gradients that
``jax.grad`` derives for ``x @ w`` contract ``x`` on its first dimension
(``x^T g``) and ``w`` on its last (``g w^T``), so they take a slower path: a
4-layer GPT step ran its backward pass 7x slower than its forward pass. `matmul`
computes the same products with the transposes materialised first (behind an
``optimization_barrier``, so XLA does not fold them back into the product): about
1.7x faster for a ``[768, 128] @ [128, 512]`` gradient on a 2-core CPU. It is
used on the CPU backend only; elsewhere it is the plain product.
Reverse mode only on CPU (``jax.jvp`` through it raises JAX's custom-VJP error);
set ``genjax.nn.dense.CPU_CUSTOM_GRADIENTS = False`` before tracing for the plain
products, which forward mode differentiates (``genjax.nn.conditioner.conv_same``
follows the same switch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


# The custom-VJP products and convolutions replace the plain ones on the CPU backend
# only; False turns them off there too (forward-mode differentiation on the CPU).
CPU_CUSTOM_GRADIENTS = True


def use_cpu_custom_gradients() -> bool:
  """Whether traced code uses the CPU's custom-VJP products (read at trace time)."""
  return CPU_CUSTOM_GRADIENTS and jax.default_backend() == "cpu"


@jax.custom_vjp
def _canonical_matmul(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
  return x_NxI @ w_IxO


def _fwd(x, w):
  return x @ w, (x, w)


def _bwd(res, g_NxO):
  x_NxI, w_IxO = res
  barrier = jax.lax.optimization_barrier
  grad_x = g_NxO @ barrier(w_IxO.T).astype(g_NxO.dtype)
  grad_w = barrier(x_NxI.T).astype(g_NxO.dtype) @ g_NxO
  return grad_x.astype(x_NxI.dtype), grad_w.astype(w_IxO.dtype)


_canonical_matmul.defvjp(_fwd, _bwd)


def matmul(x_xI: jax.Array, w_IxO: jax.Array) -> jax.Array:
  """``x @ w`` over the last axis of ``x`` (any leading axes), with CPU-fast gradients."""
  if not use_cpu_custom_gradients():
    return x_xI @ w_IxO
  lead = x_xI.shape[:-1]
  out = _canonical_matmul(x_xI.reshape(-1, x_xI.shape[-1]), w_IxO)
  return out.reshape(*lead, w_IxO.shape[-1])


def matmul_transposed(x_xI: jax.Array, w_OxI: jax.Array) -> jax.Array:
  """``x @ w.T`` (e.g. logits against a tied embedding ``[V, D]``), via `matmul` with
  the transpose materialised on the CPU backend."""
  if not use_cpu_custom_gradients():
    return x_xI @ w_OxI.T
  return matmul(x_xI, jax.lax.optimization_barrier(w_OxI.T))


class Dense(nnx.Module):
  """``x @ kernel + bias`` through `matmul`, computed in ``dtype`` (parameters float32).

  Attributes:
    kernel: ``[in, out]`` (``nnx.Param``), drawn from ``kernel_init``.
    bias: ``[out]`` zeros, or None.
  """

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               kernel_init=nnx.initializers.lecun_normal(), dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
    self.dtype = dtype

  def __call__(self, x_xI: jax.Array) -> jax.Array:
    y = matmul(x_xI.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)
