"""PyTorch twins of genjax models, for ``experiments.benchmarks.vs_pytorch``.

Each twin is the network of a genjax config written as a PyTorch user writes it:
channels-first (NCHW) ``nn.Module``s run eagerly, ``torch.optim.Adam`` (``AdamW``
where the config's optimizer is ``adamw``, with its weight decay on the same
parameters) with the config's peak learning rate held constant (genjax follows the
config's schedule), betas, epsilon and gradient clipping, and a train step
``zero_grad, loss, backward, step``. The sizes come from the config's ``model``
block, so both sides train the same network on the same batch; `build` returns a
`Twin` whose ``notes`` say what is not the same.

* `PixelCNN` and `GatedPixelCNN` (`genjax.models.pixelcnn`,
  `genjax.models.gated_pixelcnn`): the same masked convolutions, stored as their
  causal part as genjax stores them (a k x k mask-A/B convolution is a
  ``(k // 2 + 1) x k`` kernel), the same masks and the same per-example NLL;
  `sample_naive` reruns the whole network at each sub-pixel.
* Glow (`genjax.models.glow`): normflows' ``MultiscaleFlow`` built from
  normflows' own layers (ActNorm, LU 1x1 convolution, affine coupling with a
  ``ConvNet2d`` conditioner, squeeze, split) to the config's levels, steps and width.
* `ConvVAE` (`genjax.models.vae`, ``architecture="conv"``) and the DCGAN players
  `Generator` and `Discriminator` (`genjax.models.dcgan`).
* GPT (`genjax.models.gpt`): Hugging Face ``transformers``' ``GPT2LMHeadModel``
  built from a ``GPT2Config`` of the same layers, heads, width, context, vocabulary,
  MLP, LayerNorm epsilon, tied output and dropout (nothing is downloaded).
* Diffusion (`genjax.models.diffusion`): ``denoising-diffusion-pytorch``'s ``Unet``
  at genjax's channel widths per resolution, trained by its ``GaussianDiffusion``
  (``objective="pred_noise"``), with a moving average of the weights as genjax's.

No JAX is imported here: a PyTorch process times PyTorch alone.

References:
  Stimper, Liu, Campbell, Wolf, Schölkopf & Hernández-Lobato, "normflows: A PyTorch
  Package for Normalizing Flows", JOSS 2023.
  Wolf et al., "Transformers: State-of-the-Art Natural Language Processing", EMNLP
  2020 (system demonstrations).
  Wang, "denoising-diffusion-pytorch", https://github.com/lucidrains/denoising-diffusion-pytorch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_VALUES = 256  # the categorical pixel likelihood's classes
_ACTIVATIONS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "elu": F.elu,
                "tanh": torch.tanh, "softplus": F.softplus, "leaky_relu": F.leaky_relu}


@dataclasses.dataclass
class Twin:
  """A PyTorch model ready to train on one fixed batch.

  Attributes:
    modules: the trained networks (their parameters are counted).
    step: one train step; returns the loss computed before the update.
    loss: the loss at the current weights, without an update (no gradients).
    notes: what differs from the genjax model.
    net: the network whose forward gives per-pixel logits (pixel models), for
      `sample_naive` and the weight-copy check.
    shape: ``(H, W, C)`` of the images.
    likelihood: the pixel models' likelihood.
  """
  modules: dict[str, nn.Module]
  step: Callable[[], torch.Tensor]
  loss: Callable[[], torch.Tensor]
  notes: tuple[str, ...] = ()
  net: nn.Module | None = None
  shape: tuple[int, int, int] = (28, 28, 1)
  likelihood: str = ""

  def num_params(self) -> int:
    return sum(p.numel() for m in self.modules.values() for p in m.parameters())


def _optimizer(params, opt) -> torch.optim.Optimizer:
  """``torch.optim.Adam`` or ``AdamW`` with the config's optimizer settings (constant
  rate). ``params`` may be parameter groups: AdamW's groups may set their own
  ``weight_decay`` (0 for the parameters genjax does not decay)."""
  name, decay = opt.get("name", "adam"), float(opt.get("weight_decay", 0.0) or 0.0)
  kwargs = dict(lr=float(opt.learning_rate), betas=(float(opt.b1), float(opt.b2)),
                eps=float(opt.eps))
  if name == "adamw":
    return torch.optim.AdamW(params, weight_decay=decay, **kwargs)
  if name != "adam" or decay:
    raise ValueError(f"the PyTorch twins use Adam or AdamW; config.optimizer.name is "
                     f"{name!r} (weight decay {decay})")
  return torch.optim.Adam(params, **kwargs)


def _trainer(model: nn.Module, loss_fn: Callable[[], torch.Tensor], opt_config,
             params=None) -> Callable[[], torch.Tensor]:
  """The plain train step of one network: Adam(W) on ``params`` (default all of
  ``model``'s), optional gradient clipping."""
  opt = _optimizer(model.parameters() if params is None else params, opt_config)
  clip = float(opt_config.get("grad_clip_norm", 0.0) or 0.0)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    if clip:
      nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.detach()

  return step


def _ema_updater(module: nn.Module, decay: float, warmup: bool) -> Callable[[], None]:
  """The update of a moving average of ``module``'s weights, after each optimizer step.

  The average (a frozen copy) moves by ``1 - d`` towards the weights, ``d =
  min(decay, (1 + t) / (10 + t))`` at the ``t``-th update with warm-up, as genjax's
  ``train.ema_decay``.
  """
  ema, updates = copy.deepcopy(module).requires_grad_(False), [0]

  def update():
    updates[0] += 1
    t = updates[0]
    d = min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay
    with torch.no_grad():
      for e, p in zip(ema.parameters(), module.parameters()):
        e.lerp_(p, 1.0 - d)

  return update


def _no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
  def wrapped():
    with torch.no_grad():
      return fn()
  return wrapped


def _unsupported(pair: str, field: str, value, supported) -> ValueError:
  return ValueError(f"the PyTorch twin of {pair} supports config.model.{field} in "
                    f"{supported}, not {value!r}")


def _to_unit(x_uint8: torch.Tensor, top: float) -> torch.Tensor:
  """Images 0..top to floats in [-1, 1]."""
  return x_uint8.float() * (2.0 / top) - 1.0


# ------------------------------------------------------------------ pixel models


def channel_groups(num_features: int, num_groups: int, tiles: int = 1) -> torch.Tensor:
  """The colour group of each feature: ``num_groups`` contiguous groups, tiled."""
  return (torch.arange(num_features) * num_groups // num_features).repeat(tiles)


def causal_mask(kernel_size, anchor, in_groups, out_groups, mask_type) -> torch.Tensor:
  """The 0/1 mask ``float32[O, I, kh, kw]`` of a masked convolution.

  Taps before the anchor in raster order are kept, taps after it zeroed; at the
  anchor, output group g sees input groups < g (mask ``"A"``) or <= g (``"B"``).
  """
  (kh, kw), (ah, aw) = kernel_size, anchor
  rows, cols = torch.arange(kh)[:, None], torch.arange(kw)[None, :]
  before = (rows < ah) | ((rows == ah) & (cols < aw))
  mask = before.float().expand(len(out_groups), len(in_groups), kh, kw).clone()
  out_g, in_g = out_groups[:, None], in_groups[None, :]
  mask[:, :, ah, aw] = (out_g > in_g if mask_type == "A" else out_g >= in_g).float()
  return mask


class MaskedConv2d(nn.Conv2d):
  """A stride-1 convolution whose output at (i, j) is aligned with kernel tap ``anchor``.

  The input is zero-padded so that tap ``anchor`` reads position (i, j); with a
  ``mask_type`` (``"A"`` or ``"B"``) the kernel is multiplied by `causal_mask` at
  every call, so masked taps get zero gradients; ``None`` keeps every tap.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size, anchor,
               mask_type: str | None, num_groups: int = 1, out_tiles: int = 1):
    super().__init__(in_features, out_features, tuple(kernel_size))
    (kh, kw), (ah, aw) = kernel_size, anchor
    self.pad = (aw, kw - 1 - aw, ah, kh - 1 - ah)  # left, right, top, bottom
    self.register_buffer("mask", None if mask_type is None else causal_mask(
        kernel_size, anchor, channel_groups(in_features, num_groups),
        channel_groups(out_features // out_tiles, num_groups, out_tiles), mask_type))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight if self.mask is None else self.weight * self.mask
    if any(self.pad):
      x = F.pad(x, self.pad)
    return F.conv2d(x, weight, self.bias)


def causal(in_features: int, out_features: int, kernel_size: int, mask_type: str,
           num_groups: int) -> MaskedConv2d:
  """A PixelCNN k x k masked convolution stored as its ``(k // 2 + 1) x k`` upper part."""
  p = kernel_size // 2
  return MaskedConv2d(in_features, out_features, (p + 1, kernel_size), (p, p), mask_type,
                      num_groups)


def _num_outputs(likelihood: str) -> int:
  return 1 if likelihood == "bernoulli" else NUM_VALUES


class PixelCNN(nn.Module):
  """A 7x7 mask-A layer, residual blocks ``h + 1x1_B(relu(kxk_B(relu(h))))`` and two
  masked 1x1 output layers (`genjax.models.pixelcnn`)."""

  def __init__(self, channels: int, likelihood: str, features: int, num_layers: int,
               first_kernel_size: int, kernel_size: int, output_features: int):
    super().__init__()
    c = channels
    self.input_conv = causal(c, features, first_kernel_size, "A", c)
    self.blocks = nn.ModuleList(
        nn.ModuleDict({"conv": causal(features, features, kernel_size, "B", c),
                       "proj": causal(features, features, 1, "B", c)})
        for _ in range(num_layers))
    self.out1 = causal(features, output_features, 1, "B", c)
    self.out2 = causal(output_features, c * _num_outputs(likelihood), 1, "B", c)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` in [-1, 1] to ``[B, C * K, H, W]`` logits (K = 1 or 256)."""
    h = self.input_conv(x)
    for block in self.blocks:
      h = h + block["proj"](F.relu(block["conv"](F.relu(h))))
    return self.out2(F.relu(self.out1(F.relu(h))))


def _gate(a: torch.Tensor) -> torch.Tensor:
  f = a.shape[1] // 2
  return torch.tanh(a[:, :f]) * torch.sigmoid(a[:, f:])


class GatedLayer(nn.Module):
  """One layer of the vertical and horizontal stacks (`genjax.models.gated_pixelcnn`)."""

  def __init__(self, in_features: int, features: int, kernel_size: int, mask_type: str,
               num_groups: int):
    super().__init__()
    p = kernel_size // 2
    self.v_conv = MaskedConv2d(in_features, 2 * features, (p + 1, kernel_size), (p, p), None)
    self.h_conv = MaskedConv2d(in_features, 2 * features, (1, p + 1), (0, p), mask_type,
                               num_groups, out_tiles=2)
    self.v_to_h = nn.Conv2d(2 * features, 2 * features, 1)
    self.h_out = causal(features, features, 1, "B", num_groups)
    self.residual = mask_type == "B"

  def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v_pre = self.v_conv(v)
    v_shift = F.pad(v_pre[:, :, :-1], (0, 0, 1, 0))  # rows above only
    out = self.h_out(_gate(self.h_conv(h) + self.v_to_h(v_shift)))
    return _gate(v_pre), h + out if self.residual else out


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN without class conditioning; see `GatedLayer`."""

  def __init__(self, channels: int, likelihood: str, features: int, num_layers: int,
               first_kernel_size: int, kernel_size: int, output_features: int):
    super().__init__()
    c = channels
    self.layers = nn.ModuleList(
        GatedLayer(c if l == 0 else features, features,
                   first_kernel_size if l == 0 else kernel_size, "A" if l == 0 else "B", c)
        for l in range(num_layers))
    self.out1 = causal(features, output_features, 1, "B", c)
    self.out2 = causal(output_features, c * _num_outputs(likelihood), 1, "B", c)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` in [-1, 1] to ``[B, C * K, H, W]`` logits."""
    v = h = x
    for layer in self.layers:
      v, h = layer(v, h)
    return self.out2(F.relu(self.out1(F.relu(h))))


def _pixel_top(likelihood: str) -> float:
  return 1.0 if likelihood == "bernoulli" else float(NUM_VALUES - 1)


def pixel_nll(out: torch.Tensor, x_uint8: torch.Tensor, likelihood: str) -> torch.Tensor:
  """The mean over the batch of ``-log p(x)`` summed over sub-pixels, in nats."""
  b, c, h, w = x_uint8.shape
  if likelihood == "bernoulli":
    return F.binary_cross_entropy_with_logits(out, x_uint8.float(), reduction="sum") / b
  logits = out.view(b, c, NUM_VALUES, h, w).transpose(1, 2)  # classes on axis 1
  return F.cross_entropy(logits, x_uint8.long(), reduction="sum") / b


@torch.no_grad()
def sample_naive(twin: Twin, num: int, num_subpixels: int | None = None) -> torch.Tensor:
  """Draws images one sub-pixel at a time, rerunning the whole network each time.

  Args:
    twin: a pixel model's `Twin`.
    num: number of images.
    num_subpixels: draw only the first ones (the rest stay 0); default all H * W * C.
      Every step costs one whole-network pass, so a benchmark times a prefix.

  Returns:
    ``uint8[num, C, H, W]``.
  """
  h, w, c = twin.shape
  device = next(twin.net.parameters()).device
  x = torch.zeros(num, c, h, w, dtype=torch.uint8, device=device)
  for t in range(h * w * c if num_subpixels is None else num_subpixels):
    i, j, ch = t // (w * c), t // c % w, t % c
    out = twin.net(_to_unit(x, _pixel_top(twin.likelihood)))
    if twin.likelihood == "bernoulli":
      x[:, ch, i, j] = torch.bernoulli(torch.sigmoid(out[:, ch, i, j])).to(torch.uint8)
    else:
      probs = F.softmax(out.view(num, c, NUM_VALUES, h, w)[:, ch, :, i, j], -1)
      x[:, ch, i, j] = torch.multinomial(probs, 1)[:, 0].to(torch.uint8)
  return x


def pixel_logits(twin: Twin, images: np.ndarray) -> np.ndarray:
  """The twin's logits in genjax's layout: ``[B, H, W, C]`` or ``[B, H, W, C, 256]``.

  Args:
    twin: a pixel model's `Twin`.
    images: ``uint8[B, H, W, C]`` in data space.
  """
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    out = twin.net(_to_unit(x, _pixel_top(twin.likelihood)))
  b, _, h, w = out.shape
  if twin.likelihood == "bernoulli":
    return out.permute(0, 2, 3, 1).numpy()
  return out.view(b, -1, NUM_VALUES, h, w).permute(0, 3, 4, 1, 2).numpy()


def _pixel_layers(model, net: nn.Module) -> list[tuple]:
  """``(genjax layer, twin layer)`` of every convolution of a pixel model."""
  if isinstance(net, PixelCNN):
    inner = [(g, t[name]) for g_block, t in zip(model.blocks, net.blocks)
             for g, name in ((g_block.conv, "conv"), (g_block.proj, "proj"))]
    first = [(model.input_conv, net.input_conv)]
  else:
    inner = [(getattr(g_layer, name), getattr(t_layer, name))
             for g_layer, t_layer in zip(model.layers, net.layers)
             for name in ("v_conv", "h_conv", "v_to_h", "h_out")]
    first = []
  return first + inner + [(model.out1, net.out1), (model.out2, net.out2)]


def copy_genjax_weights(model, net: nn.Module) -> None:
  """Loads a genjax PixelCNN's or Gated PixelCNN's weights into its twin network.

  Args:
    model: the genjax model (its layers hold HWIO ``kernel`` and ``bias`` arrays).
    net: the twin's `PixelCNN` or `GatedPixelCNN` of the same config.
  """
  with torch.no_grad():
    for g, t in _pixel_layers(model, net):
      t.weight.copy_(torch.from_numpy(np.asarray(g.kernel[...]).transpose(3, 2, 0, 1).copy()))
      t.bias.copy_(torch.from_numpy(np.array(g.bias[...])))


def _pixel_twin(pair: str, config, x: torch.Tensor, compile_model: bool) -> Twin:
  m = config.model
  if m.get("num_classes"):
    raise _unsupported(pair, "num_classes", m.num_classes, "(0,)")
  if m.get("dtype", "float32") != "float32":
    raise _unsupported(pair, "dtype", m.dtype, "('float32',)")
  cls = PixelCNN if pair == "pixelcnn" else GatedPixelCNN
  net = cls(m.input_shape[2], m.likelihood, m.features, m.num_layers,
            m.first_kernel_size, m.kernel_size, m.output_features).to(x.device)
  run = torch.compile(net) if compile_model else net
  x_in = _to_unit(x, _pixel_top(m.likelihood))

  def loss():
    return pixel_nll(run(x_in), x, m.likelihood)

  notes = ("PyTorch's default initialisation (Kaiming uniform) instead of LeCun normal",)
  return Twin({"net": net}, _trainer(net, loss, config.optimizer), _no_grad(loss), notes,
              net=net, shape=tuple(m.input_shape), likelihood=m.likelihood)


# -------------------------------------------------------------------------- glow


def _glow_twin(config, x: torch.Tensor, compile_model: bool) -> Twin:
  import normflows as nf  # pylint: disable=g-import-not-at-top
  m = config.model
  for field, supported in (("coupling", ("affine",)), ("scale", ("sigmoid",)),
                           ("permutation", ("conv1x1_lu",)), ("actnorm", (True,)),
                           ("activation", ("relu",)), ("preprocess", ("logit", "center")),
                           ("dtype", ("float32",))):
    if m.get(field, supported[0]) not in supported:
      raise _unsupported("glow", field, m.get(field), supported)
  h, w, c = m.input_shape
  step_channels, split_shapes = [], []  # genjax's levels, finest first
  for level in range(m.num_levels):
    h, w, c = h // 2, w // 2, 4 * c
    step_channels.append(c)
    if level + 1 < m.num_levels:
      split_shapes.append((c - c // 2, h, w))
      c = c // 2
  kernels = (3, 1) + (3, 3) * m.num_blocks + (3,)

  def step_flows(channels):  # normflows' GlowBlock, with num_blocks more 3x3 layers
    net = nf.nets.ConvNet2d(((channels + 1) // 2,) + (m.hidden,) * (len(kernels) - 1)
                            + (2 * (channels // 2),), kernels, init_zeros=True)
    return [nf.flows.AffineCouplingBlock(net, scale=True, scale_map="sigmoid",
                                         split_mode="channel"),
            nf.flows.Invertible1x1Conv(channels, use_lu=True),
            nf.flows.ActNorm((channels, 1, 1))]

  q0, flows, merges = [], [], []
  for i in range(m.num_levels):  # normflows lists the levels from the coarsest
    level = m.num_levels - 1 - i
    with warnings.catch_warnings():  # normflows' LU initialisation calls torch.lu
      warnings.filterwarnings("ignore", "torch.lu is deprecated")
      steps = [f for _ in range(m.num_steps) for f in step_flows(step_channels[level])]
    flows.append(steps + [nf.flows.Squeeze()])
    if i == 0:
      q0.append(nf.distributions.DiagGaussian((c, h, w), trainable=False))
    else:
      q0.append(nf.distributions.GlowBase(split_shapes[level]))
      merges.append(nf.flows.Merge())
  transform = (nf.transforms.Logit(alpha=m.alpha) if m.preprocess == "logit"
               else nf.transforms.Shift())
  model = nf.MultiscaleFlow(q0, flows, merges, transform=transform,
                            class_cond=False).to(x.device)
  run = torch.compile(model) if compile_model else model
  dims_log_256 = math.prod(m.input_shape) * math.log(256.0)

  def loss():  # nats per example of the dequantised 8-bit image, as genjax's
    x_deq = (x.float() + torch.rand(x.shape, device=x.device)) / 256.0
    return torch.mean(run(x_deq)) + dims_log_256

  notes = ("normflows' conditioner is a plain conv stack (3x3, 1x1, "
           f"{2 * m.num_blocks} x 3x3, zero 3x3): genjax's has a residual skip around the "
           "middle pair, a zero-initialised second 3x3 and a learned gain on the last layer",
           "normflows' factored-out latents have a learned per-channel Gaussian (GlowBase); "
           "genjax's split prior is a zero-initialised 3x3 conv of the kept half",
           "normflows' sigmoid scale is sigmoid(h + 2); genjax's sigmoid(h + 2) / sigmoid(2)")
  return Twin({"flow": model}, _trainer(model, loss, config.optimizer), _no_grad(loss),
              notes, shape=tuple(m.input_shape))


# --------------------------------------------------------------------------- vae


class ResBlock(nn.Module):
  """Pre-activation ``x + conv(act(conv(act(x))))``, the second 3x3 conv zero-initialised."""

  def __init__(self, channels: int, activation):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
    self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
    nn.init.zeros_(self.conv2.weight)
    nn.init.zeros_(self.conv2.bias)
    self.act = activation

  def forward(self, x):
    return x + self.conv2(self.act(self.conv1(self.act(x))))


def _halved(size: int, times: int) -> int:
  for _ in range(times):
    size = -(-size // 2)
  return size


class ConvVAE(nn.Module):
  """`genjax.nn.ConvEncoder` / `ConvDecoder` with a Bernoulli decoder; ``forward`` is
  the negative ELBO (one reparameterised sample, analytic KL), mean over the batch."""

  def __init__(self, input_shape, latent_dim: int, channels, beta: float, activation: str):
    super().__init__()
    h, w, c = input_shape
    n = len(channels)
    self.act = _ACTIVATIONS[activation]
    self.latent_dim, self.beta, self.shape = latent_dim, beta, (h, w)
    self.base = (channels[-1], _halved(h, n), _halved(w, n))
    ins = (channels[0],) + tuple(channels[:-1])
    self.stem = nn.Conv2d(c, channels[0], 3, padding=1)
    self.down = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2, padding=1)
                              for i, o in zip(ins, channels))
    self.enc_res = nn.ModuleList(ResBlock(o, self.act) for o in channels)
    self.enc_out = nn.Linear(math.prod(self.base), 2 * latent_dim)
    self.dec_in = nn.Linear(latent_dim, math.prod(self.base))
    self.dec_res = nn.ModuleList(ResBlock(i, self.act) for i in reversed(channels))
    self.up = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1)
                            for i, o in zip(reversed(channels), reversed(ins)))
    self.dec_out = nn.Conv2d(channels[0], c, 3, padding=1)

  def forward(self, x_uint8: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    h = self.stem(_to_unit(x_uint8, 1.0))
    for down, res in zip(self.down, self.enc_res):
      h = res(self.act(down(h)))
    mean, log_var = self.enc_out(self.act(h).flatten(1)).chunk(2, dim=1)
    z = mean + torch.exp(0.5 * log_var) * eps
    h = self.act(self.dec_in(z)).view(-1, *self.base)
    for res, up in zip(self.dec_res, self.up):
      h = self.act(up(F.interpolate(res(h), scale_factor=2, mode="nearest")))
    logits = self.dec_out(h[:, :, :self.shape[0], :self.shape[1]])
    recon = F.binary_cross_entropy_with_logits(logits, x_uint8.float(),
                                               reduction="none").flatten(1).sum(1)
    kl = 0.5 * (torch.exp(log_var) + mean ** 2 - 1.0 - log_var).sum(1)
    return torch.mean(recon + self.beta * kl)


def _vae_twin(config, x: torch.Tensor, compile_model: bool) -> Twin:
  m = config.model
  for field, supported in (("architecture", ("conv",)), ("likelihood", ("bernoulli",)),
                           ("dtype", ("float32",))):
    if m.get(field, supported[0]) not in supported:
      raise _unsupported("vae", field, m.get(field), supported)
  model = ConvVAE(m.input_shape, m.latent_dim, tuple(m.channels), m.beta,
                  m.activation).to(x.device)
  run = torch.compile(model) if compile_model else model

  def loss():
    return run(x, torch.randn(x.shape[0], m.latent_dim, device=x.device))

  notes = ("PyTorch's stride-2 convolutions pad (1, 1), XLA's SAME (0, 1): the same "
           "sizes and cost",)
  return Twin({"vae": model}, _trainer(model, loss, config.optimizer), _no_grad(loss),
              notes, shape=tuple(m.input_shape))


# ------------------------------------------------------------------------- dcgan


class Generator(nn.Module):
  """``z`` -> dense -> [layer norm, relu, 4x4 stride-2 transposed conv] per width ->
  layer norm, relu, 3x3 conv, tanh (`genjax.models.dcgan.Generator`)."""

  def __init__(self, input_shape, latent_dim: int, channels):
    super().__init__()
    h, w, c = input_shape
    n = len(channels)
    self.shape = (h, w)
    self.base = (channels[-1], _halved(h, n), _halved(w, n))
    ins = tuple(reversed(channels))
    outs = ins[1:] + (channels[0],)
    self.inp = nn.Linear(latent_dim, math.prod(self.base))
    self.norms = nn.ModuleList(nn.GroupNorm(1, f) for f in (ins[0],) + outs)
    self.ups = nn.ModuleList(nn.ConvTranspose2d(i, o, 4, stride=2, padding=1)
                             for i, o in zip(ins, outs))
    self.out = nn.Conv2d(channels[0], c, 3, padding=1)

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    h = self.inp(z).view(-1, *self.base)
    for i, norm in enumerate(self.norms):
      h = F.relu(norm(h))
      if i < len(self.ups):
        h = self.ups[i](h)
    return torch.tanh(self.out(h[:, :, :self.shape[0], :self.shape[1]]))


class Discriminator(nn.Module):
  """4x4 stride-2 convolutions with leaky ReLU (0.2) and a linear output."""

  def __init__(self, input_shape, channels):
    super().__init__()
    h, w, c = input_shape
    n = len(channels)
    ins = (c,) + tuple(channels[:-1])
    self.convs = nn.ModuleList(nn.Conv2d(i, o, 4, stride=2, padding=1)
                               for i, o in zip(ins, channels))
    self.out = nn.Linear(channels[-1] * _halved(h, n) * _halved(w, n), 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.leaky_relu(conv(x), 0.2)
    return self.out(x.flatten(1))[:, 0]


def _dcgan_twin(config, x: torch.Tensor, compile_model: bool) -> Twin:
  m = config.model
  for field, supported in (("loss", ("non_saturating",)), ("spectral_norm", (False,)),
                           ("r1_weight", (0.0,)), ("d_steps", (1,)), ("num_classes", (0,)),
                           ("g_norm", ("layer",)), ("dtype", ("float32",))):
    if m.get(field, supported[0]) not in supported:
      raise _unsupported("dcgan", field, m.get(field), supported)
  h, w, _ = m.input_shape
  if any(s % 2 ** len(ch) for s in (h, w) for ch in (m.g_channels, m.d_channels)):
    raise ValueError("the PyTorch DCGAN twin needs image sides divisible by 2 per stage "
                     "(its stride-2 layers halve exactly)")
  gen = Generator(m.input_shape, m.latent_dim, tuple(m.g_channels)).to(x.device)
  disc = Discriminator(m.input_shape, tuple(m.d_channels)).to(x.device)
  update_ema = _ema_updater(gen, m.ema_decay, m.ema_warmup)
  opts = {}
  for name, module in (("generator", gen), ("discriminator", disc)):
    opt_config = copy.deepcopy(config.optimizer)
    opt_config.update(config.optimizer.get(name) or {})
    opts[name] = _optimizer(module.parameters(), opt_config)
  run_g, run_d = (torch.compile(gen), torch.compile(disc)) if compile_model else (gen, disc)
  x_real = _to_unit(x, 255.0 if m.view == "8bit" else 1.0)
  b = x.shape[0]

  def d_loss(x_fake):
    return torch.mean(F.softplus(-run_d(x_real)) + F.softplus(run_d(x_fake)))

  def step():
    with torch.no_grad():
      x_fake = run_g(torch.randn(b, m.latent_dim, device=x.device))
    loss = d_loss(x_fake)
    opts["discriminator"].zero_grad(set_to_none=True)
    loss.backward()
    opts["discriminator"].step()
    disc.requires_grad_(False)  # the generator's step differentiates its own weights only
    g_loss = torch.mean(F.softplus(-run_d(run_g(torch.randn(b, m.latent_dim,
                                                            device=x.device)))))
    opts["generator"].zero_grad(set_to_none=True)
    g_loss.backward()
    opts["generator"].step()
    disc.requires_grad_(True)
    update_ema()
    return loss.detach()

  def loss():
    with torch.no_grad():
      return d_loss(gen(torch.randn(b, m.latent_dim, device=x.device)))

  notes = ("the loss is the discriminator's (as genjax's metrics 'd_loss')",
           "PyTorch's GroupNorm eps is 1e-5, Flax's 1e-6")
  return Twin({"generator": gen, "discriminator": disc}, step, loss, notes,
              shape=tuple(m.input_shape))


# --------------------------------------------------------------------------- gpt


def _gpt_twin(config, tokens: torch.Tensor, compile_model: bool) -> Twin:
  from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=g-import-not-at-top
  m = config.model
  for field, supported in (("positions", ("learned",)), ("bias", (True,)),
                           ("dtype", ("float32",))):
    if m.get(field, supported[0]) not in supported:
      raise _unsupported("gpt", field, m.get(field), supported)
  hf_config = GPT2Config(
      vocab_size=m.vocab_size, n_positions=m.block_size, n_embd=m.width,
      n_layer=m.num_layers, n_head=m.num_heads, n_inner=m.mlp_ratio * m.width,
      activation_function="gelu_new",  # GELU's tanh form, as genjax's
      resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=0.0,
      layer_norm_epsilon=1e-6,  # Flax's LayerNorm default (GPT-2's is 1e-5)
      tie_word_embeddings=True, use_cache=False, bos_token_id=None, eos_token_id=None,
      attn_implementation="sdpa")
  model = GPT2LMHeadModel(hf_config).to(tokens.device).train()
  run = torch.compile(model) if compile_model else model
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  named = list(model.named_parameters())  # the tied output weight once, as wte

  def decays(name, p):  # matrices and the token embedding, as genjax's gpt.decay_mask
    return p.dim() >= 2 and not name.endswith("wpe.weight")

  groups = [{"params": [p for n, p in named if decays(n, p)]},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]

  def loss():  # the mean next-token cross-entropy over positions 1..T-1, in nats
    logits = run(input_ids=inputs).logits
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

  notes = ("the same architecture and initialisation (normal 0.02, residual projections "
           "0.02 / sqrt(2 * layers)); attention through torch's scaled_dot_product_attention",)
  if m.dropout:
    notes += ("genjax drops no attention probabilities: attn_pdrop is 0, the embedding "
              f"and residual dropout {m.dropout}",)
  return Twin({"gpt": model}, _trainer(model, loss, config.optimizer, groups),
              _no_grad(loss), notes)


# --------------------------------------------------------------------- diffusion

LINEAR_ATTENTION_HEAD = 8  # the channels of the one head of the Unet's linear attention


def diffusion_unet_kwargs(m) -> dict:
  """The arguments of denoising-diffusion-pytorch's ``Unet`` for genjax's U-Net ``m``.

  Its stage ``i`` runs at width ``dims[i]`` and widens to ``dims[i + 1]`` when it
  downsamples, with ``dims = (init_dim, dim * mult for mult in dim_mults)``; so
  ``init_dim=channels, dim=channels // 2, dim_mults=2 * channel_mults`` gives
  ``(16, 16, 32, 32)`` for ``mnist``: the widths of ``Unet(dim=16, dim_mults=(1, 2,
  2))`` with a time embedding of ``4 * dim = 32`` features (genjax's has 64). That
  halving brings the count within 5% of genjax's (295,937 against 283,827):
  ``dim=16`` has 14% more parameters (323,393), as its stages hold two residual
  blocks on the way down (genjax's ``num_res_blocks=1`` holds one) and linear
  attention. Full attention (the innermost stage and the middle) has genjax's heads
  (one of 32 channels for ``mnist``); the linear attention one head of
  `LINEAR_ATTENTION_HEAD` channels. The Unet takes 28x28: it needs sides divisible
  by 2 per downsampling (4 here), as genjax's stages do.
  """
  inner = m.channels * m.channel_mults[-1]
  return dict(dim=m.channels // 2, init_dim=m.channels,
              dim_mults=tuple(2 * k for k in m.channel_mults), channels=m.input_shape[2],
              dropout=m.dropout, attn_heads=m.num_heads,
              attn_dim_head=(LINEAR_ATTENTION_HEAD,) * (len(m.channel_mults) - 1)
              + (inner // m.num_heads,),
              full_attn=(False,) * (len(m.channel_mults) - 1) + (True,))


def _diffusion_twin(config, x: torch.Tensor, compile_model: bool) -> Twin:
  import denoising_diffusion_pytorch as ddp  # pylint: disable=g-import-not-at-top
  m = config.model
  h, w, _ = m.input_shape
  innermost = h // 2 ** (len(m.channel_mults) - 1)
  for field, supported in (("num_res_blocks", (1,)), ("num_classes", (0,)),
                           ("attention_resolutions", ((innermost,),)),
                           ("parameterization", ("eps",)), ("dtype", ("float32",))):
    value = m.get(field, supported[0])
    if (tuple(value) if isinstance(value, (list, tuple)) else value) not in supported:
      raise _unsupported("diffusion", field, value, supported)
  if m.channels % 2 or h % 2 ** (len(m.channel_mults) - 1) or h != w:
    raise ValueError("the PyTorch diffusion twin needs an even config.model.channels and "
                     "square images whose side halves exactly at every downsampling")
  unet = ddp.Unet(**diffusion_unet_kwargs(m)).to(x.device)
  diffusion = ddp.GaussianDiffusion(unet, image_size=h, timesteps=1000, objective="pred_noise",
                                beta_schedule="cosine").to(x.device)
  run = torch.compile(diffusion) if compile_model else diffusion
  x_01 = (x.float() + 0.5) / 256.0  # bin centres; GaussianDiffusion maps [0, 1] to [-1, 1]
  update_ema = _ema_updater(unet, m.ema_decay, m.ema_warmup)
  train = _trainer(unet, lambda: run(x_01), config.optimizer)

  def step():
    loss = train()
    update_ema()
    return loss

  genjax_loss = "the noise MSE on its own schedule"
  if m.loss == "vdm":
    genjax_loss = ("the variational bound in bits/dim (prior + reconstruction + a "
                   f"{'discrete' if m.timesteps else 'continuous'}-time diffusion term"
                   f"{'; the schedule is learned' if m.schedule == 'learned' else ''})")
  notes = (
      f"the losses differ: genjax's step is its config's loss, {genjax_loss}; PyTorch's "
      "is GaussianDiffusion's pred_noise MSE at a uniform discrete time (T = 1000, "
      "cosine schedule, no parameters); each is one U-Net pass and its gradient per "
      "example, which dominate both steps",
      "denoising-diffusion-pytorch's Unet: two residual blocks per stage on the way "
      "down (genjax: one), linear attention at the outer stages (genjax: none), stages "
      "that widen as they downsample (each runs at genjax's width of the stage above "
      f"it), a time embedding of {2 * m.channels} features (genjax: {4 * m.channels}), "
      "a 7x7 input convolution and a final residual block, RMSNorm for GroupNorm, "
      "scale-and-shift time conditioning, memory key/values in attention",
  )
  if m.fourier_features:
    notes += (f"genjax's input has VDM's Fourier features (exponents "
              f"{tuple(m.fourier_features)}); the Unet sees the noisy image alone",)
  return Twin({"unet": unet}, step, _no_grad(lambda: diffusion(x_01)), notes,
              shape=tuple(m.input_shape))


# ---------------------------------------------------------------------- builders


def build(pair: str, config, batch: dict[str, np.ndarray], device: str = "cpu",
          compile_model: bool = False) -> Twin:
  """The PyTorch twin of a genjax config, training on ``batch``.

  Args:
    pair: ``pixelcnn``, ``gated_pixelcnn``, ``glow``, ``vae``, ``dcgan``, ``gpt``
      or ``diffusion``.
    config: the genjax experiment config (``model`` with ``input_shape`` or
      ``vocab_size`` set, and ``optimizer``).
    batch: the batch every step trains on, as genjax's: ``{"image": uint8[B, H, W,
      C]}`` or, for ``gpt``, ``{"tokens": int32[B, T]}``.
    device: a torch device (``cpu`` or ``cuda``).
    compile_model: wrap the networks in ``torch.compile``.

  Returns:
    The `Twin`.

  Raises:
    ValueError: for a config field the twin does not implement.
  """
  if pair == "gpt":
    tokens = torch.from_numpy(np.asarray(batch["tokens"], np.int64)).to(device)
    return _gpt_twin(config, tokens, compile_model)
  images = batch["image"]
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
  if pair in ("pixelcnn", "gated_pixelcnn"):
    return _pixel_twin(pair, config, x, compile_model)
  builders = {"glow": _glow_twin, "vae": _vae_twin, "dcgan": _dcgan_twin,
              "diffusion": _diffusion_twin}
  if pair not in builders:
    raise ValueError(f"no PyTorch twin for {pair!r}")
  return builders[pair](config, x, compile_model)
