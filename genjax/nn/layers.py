"""Small Flax NNX building blocks shared by the model families.

Images are NHWC (``x_BxHxWxC``). Every module takes ``rngs: nnx.Rngs`` for its
initialisation and is otherwise a pure function of its inputs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn import winograd

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
}


def get_activation(name: str | Activation) -> Activation:
  """Returns the activation function named ``name`` (a callable passes through).

  Raises:
    ValueError: naming the allowed activations, when ``name`` is unknown.
  """
  if callable(name):
    return name
  if name not in ACTIVATIONS:
    raise ValueError(
        f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[name]


def dropout(key: jax.Array | None, rate: float, x: jax.Array) -> jax.Array:
  """Inverted dropout: zeros a ``rate`` fraction of ``x``, scales the rest by
  ``1 / (1 - rate)``; the identity when ``key`` is None or ``rate`` is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


# Compiled once per (shape, dtype) and shared by every module that uses it.
_lecun_normal = jax.jit(nnx.initializers.lecun_normal(), static_argnums=(1, 2))


def kernel_init(init: nnx.Initializer | None = None) -> nnx.Initializer:
  """A fan-in initializer that draws ``[prod(shape[:-1]), shape[-1]]``, then reshapes.

  With JAX's (partitionable) threefry PRNG a draw of shape ``(72, 16)`` reshaped to
  ``(3, 3, 8, 16)`` equals the 4-D draw bit for bit, and a fan-in initializer sees
  the same fan-in (3 * 3 * 8), so the parameters are exactly those of ``init``.
  It is a compile-time measure: XLA on a CPU compiles a 4-D draw about 10x slower
  than a 2-D one, and the default (LeCun normal, the Flax default for ``Linear``
  and ``Conv``) is jitted once per shape, so building models eagerly does not
  compile every random op of every layer again.

  Args:
    init: an initializer whose scale depends on the fan-in only (LeCun or
      He/Kaiming ``fan_in``); default the shared, jitted LeCun normal.

  Returns:
    The initializer ``(key, shape, dtype) -> array``.
  """
  init = _lecun_normal if init is None else init

  def wrapped(key, shape, dtype=jnp.float32):
    flat_shape = (math.prod(shape[:-1]), shape[-1]) if len(shape) > 2 else tuple(shape)
    return init(key, flat_shape, dtype).reshape(shape)

  return wrapped


# Compute dtypes of ``config.model.dtype``: parameters stay float32, and the layers
# compute (inputs, products, activations) in the chosen dtype. A layer's ``dtype=None``
# (the default) computes in the dtype of its inputs and parameters.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The layers' ``dtype`` for ``config.model.dtype`` ``name``: None for float32 (the
  inputs' and parameters' dtype, so float64 under ``jax_enable_x64`` in gradient
  checks, and no casts at all), else the ``DTYPES`` entry."""
  return None if name == "float32" else DTYPES[name]


def to_compute(x: jax.Array, dtype) -> jax.Array:
  """``x`` in the compute ``dtype``; unchanged for None."""
  return x if dtype is None else x.astype(dtype)


def at_least_float32(x: jax.Array) -> jax.Array:
  """bfloat16 to float32; float32 and float64 unchanged (no operation)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def linear(in_features: int, out_features: int, *, dtype=None,
           rngs: nnx.Rngs) -> nnx.Linear:
  """An ``nnx.Linear`` with the shared `kernel_init` (LeCun normal) and zero bias,
  computing in ``dtype`` (float32 parameters; None: the inputs' and parameters')."""
  return nnx.Linear(in_features, out_features, kernel_init=kernel_init(), dtype=dtype,
                    rngs=rngs)


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, *, strides: int = 1,
         zero_init: bool = False, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
  """A SAME-padded ``nnx.Conv`` with the shared `kernel_init` (or a zero kernel),
  computing in ``dtype`` (float32 parameters; None: the inputs' and parameters').
  Its stride-1 3x3 convolutions go through `genjax.nn.winograd` where that is faster."""
  return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size),
                  strides=(strides, strides), padding="SAME",
                  kernel_init=(nnx.initializers.zeros_init() if zero_init
                               else kernel_init()), dtype=dtype,
                  conv_general_dilated=winograd.conv_general_dilated, rngs=rngs)


class MLP(nnx.Module):
  """A stack of dense layers with an activation between them.

  ``MLP(784, (512, 512, 100))`` maps ``[..., 784]`` to ``[..., 100]`` through two
  hidden layers of width 512; the last layer has no activation unless
  ``activate_final``.
  """

  def __init__(self, in_features: int, widths: Sequence[int], *,
               activation: str | Activation = "relu", activate_final: bool = False,
               dtype=None, rngs: nnx.Rngs):
    if not widths:
      raise ValueError("MLP needs at least one width (the output width)")
    sizes = (int(in_features),) + tuple(int(w) for w in widths)
    self.layers = nnx.List([linear(a, b, dtype=dtype, rngs=rngs)
                            for a, b in zip(sizes[:-1], sizes[1:])])
    self.activation = get_activation(activation)
    self.activate_final = activate_final

  def __call__(self, x_BxD: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x_BxD = layer(x_BxD)
      if i + 1 < len(self.layers) or self.activate_final:
        x_BxD = self.activation(x_BxD)
    return x_BxD


class ResBlock(nnx.Module):
  """A pre-activation residual block: ``x + conv(act(conv(act(x))))``.

  The second convolution starts at zero, so the block is the identity at
  initialisation (He et al. 2016, "Identity mappings in deep residual networks").
  """

  def __init__(self, channels: int, *, kernel_size: int = 3,
               activation: str | Activation = "relu", dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = conv(channels, channels, kernel_size, dtype=dtype, rngs=rngs)
    self.conv2 = conv(channels, channels, kernel_size, zero_init=True, dtype=dtype,
                      rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    h_BxHxWxC = self.conv1(self.activation(x_BxHxWxC))
    return x_BxHxWxC + self.conv2(self.activation(h_BxHxWxC))


class Downsample(nnx.Module):
  """A stride-2 SAME convolution: ``[B, H, W, Ci] -> [B, ceil(H/2), ceil(W/2), Co]``."""

  def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
               dtype=None, rngs: nnx.Rngs):
    self.conv = conv(in_channels, out_channels, kernel_size, strides=2, dtype=dtype,
                     rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return self.conv(x_BxHxWxC)


def upsample_nearest(x_BxHxWxC: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling by an integer ``factor`` in H and W."""
  return jnp.repeat(jnp.repeat(x_BxHxWxC, factor, axis=1), factor, axis=2)


class Upsample(nnx.Module):
  """A resize-convolution: nearest-neighbour 2x upsampling, then a SAME convolution.

  ``[B, H, W, Ci] -> [B, 2H, 2W, Co]``; avoids the checkerboard artefacts of
  transposed convolutions (Odena et al. 2016, "Deconvolution and checkerboard
  artifacts", Distill).
  """

  def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
               dtype=None, rngs: nnx.Rngs):
    self.conv = conv(in_channels, out_channels, kernel_size, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return self.conv(upsample_nearest(x_BxHxWxC, 2))


def downsampled_size(size: int, num_halvings: int) -> int:
  """The spatial size after ``num_halvings`` stride-2 SAME convolutions (``ceil``)."""
  for _ in range(num_halvings):
    size = -(-size // 2)
  return size


def crop(x_BxHxWxC: jax.Array, height: int, width: int) -> jax.Array:
  """Crops the top-left ``height x width`` window (e.g. 8x8 upsampled back to 7x7)."""
  if x_BxHxWxC.shape[1] < height or x_BxHxWxC.shape[2] < width:
    raise ValueError(
        f"cannot crop {x_BxHxWxC.shape[1]}x{x_BxHxWxC.shape[2]} to {height}x{width}")
  return x_BxHxWxC[:, :height, :width]


class ConvEncoder(nnx.Module):
  """Image to vector: a 3x3 stem, then per width a stride-2 stage and a `ResBlock`.

  ``[B, H, W, C] -> [B, out_features]``; after ``len(channels)`` halvings (``ceil``,
  so any H and W work) the grid is flattened into one dense layer.
  """

  def __init__(self, input_shape: Sequence[int], channels: Sequence[int],
               out_features: int, *, activation: str | Activation = "relu",
               dtype=None, rngs: nnx.Rngs):
    h, w, c = input_shape
    ins = (channels[0],) + tuple(channels[:-1])
    self.stem = conv(c, channels[0], dtype=dtype, rngs=rngs)
    self.down = nnx.List([Downsample(i, o, dtype=dtype, rngs=rngs)
                          for i, o in zip(ins, channels)])
    self.res = nnx.List([ResBlock(o, activation=activation, dtype=dtype, rngs=rngs)
                         for o in channels])
    n = len(channels)
    base = downsampled_size(h, n) * downsampled_size(w, n) * channels[-1]
    self.out = linear(base, out_features, dtype=dtype, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    h_BxHxWxF = self.stem(x_BxHxWxC)
    for down, res in zip(self.down, self.res):
      h_BxHxWxF = res(self.activation(down(h_BxHxWxF)))
    return self.out(self.activation(h_BxHxWxF).reshape(x_BxHxWxC.shape[0], -1))


class ConvDecoder(nnx.Module):
  """Vector to image, the mirror of `ConvEncoder`, exactly ``output_shape``.

  ``[B, in_features] -> [B, H, W, C]``: a dense layer to the encoder's base grid,
  then per width (reversed) a `ResBlock` and a 2x `Upsample`, a top-left `crop`
  to H x W (e.g. 8x8 -> 7x7) and a 3x3 convolution to C channels.
  """

  def __init__(self, in_features: int, output_shape: Sequence[int],
               channels: Sequence[int], *, activation: str | Activation = "relu",
               dtype=None, rngs: nnx.Rngs):
    h, w, c = output_shape
    n = len(channels)
    self.output_shape = tuple(output_shape)
    self.base_shape = (downsampled_size(h, n), downsampled_size(w, n), channels[-1])
    outs = (channels[0],) + tuple(channels[:-1])
    self.inp = linear(in_features, math.prod(self.base_shape), dtype=dtype, rngs=rngs)
    self.res = nnx.List([ResBlock(i, activation=activation, dtype=dtype, rngs=rngs)
                         for i in reversed(channels)])
    self.up = nnx.List([Upsample(i, o, dtype=dtype, rngs=rngs)
                        for i, o in zip(reversed(channels), reversed(outs))])
    self.out = conv(channels[0], c, dtype=dtype, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, z_BxD: jax.Array) -> jax.Array:
    h_BxHxWxF = self.activation(self.inp(z_BxD)).reshape(-1, *self.base_shape)
    for res, up in zip(self.res, self.up):
      h_BxHxWxF = self.activation(up(res(h_BxHxWxF)))
    return self.out(crop(h_BxHxWxF, *self.output_shape[:2]))
