"""Spectral normalisation (Miyato et al. 2018) as a pure forward pass.

`SpectralNorm` wraps a layer with a ``kernel`` (and optional ``bias``) that is
linear in its input, such as ``nnx.Linear`` or ``nnx.Conv``, and computes
``layer(x)`` with the kernel divided by its largest singular value ``sigma``. The
forward pass never writes state: the power-iteration vector ``u`` is advanced by
an explicit call to `power_iteration` (once per training step, before the
gradient step), so the layer can be differentiated any number of times (e.g. for
a gradient penalty with respect to the input) without side effects.

``flax.nnx.SpectralNorm`` instead overwrites the wrapped layer's parameter with the
normalised one on every call; genjax keeps the raw parameter and normalises on
the fly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class PowerIterate(nnx.Variable):
  """The left singular vector estimate ``u`` of a spectral-normalised kernel."""


def _normalize(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  return v / jnp.sqrt(jnp.sum(v * v) + eps)


class SpectralNorm(nnx.Module):
  """``layer(x)`` with its kernel divided by its spectral norm.

  The kernel is viewed as a matrix ``W`` of shape ``[fan_in, out]`` (all leading
  axes flattened); ``sigma = ||W u||`` with ``u`` (``[out]``, unit norm, no
  gradient) the current power-iteration estimate, so ``dsigma/dW = v u^T`` with
  ``v = W u / ||W u||`` as in Miyato et al. Because the layer is linear in its
  input up to the bias, ``layer_sn(x) = (layer(x) - b) / sigma + b``.

  References:
    Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
    Adversarial Networks", ICLR 2018.
  """

  def __init__(self, layer: nnx.Module, *, rngs: nnx.Rngs):
    self.layer = layer
    out = layer.kernel.shape[-1]
    self.u = PowerIterate(_normalize(jax.random.normal(rngs.params(), (out,))))

  def _matrix(self) -> jax.Array:
    kernel = self.layer.kernel[...]
    return kernel.reshape(-1, kernel.shape[-1])

  def sigma(self) -> jax.Array:
    """The spectral-norm estimate ``||W u||`` (differentiable in ``W`` only)."""
    u_O = jax.lax.stop_gradient(self.u[...])
    return jnp.sqrt(jnp.sum((self._matrix() @ u_O) ** 2) + 1e-12)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``layer(x)`` normalised, in the layer's output dtype (bias and ``sigma``, float32,
    are cast to a bfloat16 layer's)."""
    y = self.layer(x)
    bias = (self.layer.bias[...].astype(y.dtype)
            if getattr(self.layer, "bias", None) is not None else 0.0)
    return (y - bias) / self.sigma().astype(y.dtype) + bias


def power_iteration(module: nnx.Module, num_steps: int = 1) -> None:
  """Advances ``u`` of every `SpectralNorm` inside ``module`` in place.

  One step is ``u <- normalize(W^T normalize(W u))``; without gradient.

  Args:
    module: any NNX module (those without `SpectralNorm` layers are left alone).
    num_steps: power-iteration steps.
  """
  for _, sub in nnx.iter_graph(module):
    if isinstance(sub, SpectralNorm):
      w = jax.lax.stop_gradient(sub._matrix())  # pylint: disable=protected-access
      u = sub.u[...]
      for _ in range(num_steps):
        u = _normalize(w.T @ _normalize(w @ u))
      sub.u.set_value(u)
