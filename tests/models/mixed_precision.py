"""The check of ``config.model.dtype="bfloat16"`` shared by the family tests (not a
test module)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


_COMPUTE = ("dot_general", "conv_general_dilated")


def compute_ops(jaxpr) -> list[tuple[str, tuple[str, ...], str]]:
  """``(primitive, operand dtypes, equation)`` of every product of matrices and every
  convolution (``dot_general``, ``conv_general_dilated``) in ``jaxpr`` and the
  jaxprs nested in it (scans, custom gradients)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in _COMPUTE:
      out.append((eqn.primitive.name, tuple(str(v.aval.dtype) for v in eqn.invars),
                  str(eqn)[:200]))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(getattr(sub, "jaxpr", sub), "eqns"):
          out += compute_ops(sub)
  return out


def assert_bfloat16_ops(jaxpr, float32_ok=lambda op: False) -> None:
  """Every product and convolution of ``jaxpr`` has bfloat16 operands (a float32
  result, e.g. attention logits, is fine), except the ops ``float32_ok`` accepts
  (the parts a family keeps in float32); there are some."""
  ops = compute_ops(jaxpr)
  in_bf16 = lambda op: set(op[1]) == {"bfloat16"}  # noqa: E731
  assert any(in_bf16(op) for op in ops), ops
  assert not [op for op in ops if not in_bf16(op) and not float32_ok(op)], ops


def _outputs(family, model, batch, key):
  """The family's loss and log-likelihood (a GAN's: its generator's loss)."""
  loss, metrics = family.loss(model, batch, key)
  if family.LIKELIHOOD is None:
    return loss, metrics["g_loss"]
  return loss, family.log_likelihood(model, batch, key)


def check_bfloat16(family, build, batch, *, rtol=5e-2, float32_ok=lambda op: False) -> None:
  """``config.model.dtype="bfloat16"`` against float32 on the same parameters.

  Args:
    family: the family module (``loss``, ``log_likelihood``, ``LIKELIHOOD``).
    build: ``dtype -> model``, the same parameters for ``"float32"`` and
      ``"bfloat16"``.
    batch: a batch for ``loss`` and ``log_likelihood``.
    rtol: how close the bfloat16 outputs must be to the float32 ones.
    float32_ok: ``(primitive, operand dtypes, equation) -> bool``, the products and
      convolutions allowed in float32.

  Checks that the bfloat16 model's parameters are float32 and those of the float32
  model (so are their gradients: JAX's cotangents have their primal's dtype), that
  its loss and log-likelihood are float32, finite and within ``rtol`` of the
  float32 ones, and that its products and convolutions compute in bfloat16.
  """
  key = jax.random.key(1)
  params, outs = {}, {}
  for dtype in ("float32", "bfloat16"):
    graphdef, params[dtype], rest = nnx.split(build(dtype), nnx.Param, ...)

    def apply(p, b, k):
      return _outputs(family, nnx.merge(graphdef, p, rest), b, k)  # pylint: disable=cell-var-from-loop

    traced = _jit(apply).trace(params[dtype], batch, key)
    outs[dtype] = traced.lower().compile()(params[dtype], batch, key)
  for p32, p16 in zip(jax.tree.leaves(params["float32"]), jax.tree.leaves(params["bfloat16"])):
    assert p16.dtype == jnp.float32
    np.testing.assert_array_equal(p16, p32)
  for o32, o16 in zip(outs["float32"], outs["bfloat16"]):
    assert o16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(o16)))
    np.testing.assert_allclose(o16, o32, rtol=rtol)
  assert_bfloat16_ops(traced.jaxpr, float32_ok)
