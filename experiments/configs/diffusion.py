r"""Diffusion (DDPM and the variational diffusion bound) on 8-bit digits or MNIST.

Variants:
  smoke:  a tiny U-Net (one resolution) on 8-bit digits, 20 steps, seconds on a CPU
          (tests use it).
  digits: the embedded 8x8 digits at 8 bits (no download): a U-Net of widths
          32-64-64 (8 -> 4 -> 2, attention at 2x2), the VDM bound in continuous time
          with the cosine schedule, 4,000 steps:
            python -m experiments.main --config=experiments/configs/diffusion.py:digits \
                --workdir=runs/diffusion_digits
  digits_ddpm: as digits, trained with DDPM's simple noise loss on the linear
          schedule (T = 1000).
  mnist:  8-bit MNIST (28 -> 14 -> 7, attention at 7x7), widths 16-32-32 (283,827
          parameters), VDM's Fourier input features (exponents 6 and 7), the
          continuous-time VDM bound with a learned schedule, 8,600 steps of batch 32:
          ~0.5 s a step on the 2-core CPU (9.0 GFLOP a step), 78 min on the idle
          machine:
            python -m experiments.main --config=experiments/configs/diffusion.py:mnist \
                --workdir=runs/diffusion_mnist
            python -m experiments.evaluate --workdir=runs/diffusion_mnist \
                --nosample_metrics --time_samples=4
          Result: README, "Diffusion on 8-bit MNIST" (test bound and samplers).
  mnist_cond: as mnist, class-conditional (label dropout 0.1 for classifier-free
          guidance).
  mnist_large: widths 64-128-128, two blocks per resolution, dropout 0.1, 200k
          steps of batch 128: for an accelerator.

The likelihood is a bound (``experiments.evaluate`` reports its bits/dim on the 8-bit
data, comparable with the flows and PixelCNN++). Samples use the moving average of
the weights and, by default, the ancestral sampler over ``sample_steps`` steps;
``python -m experiments.sample --workdir=... --sampler=ddim --steps=50`` picks another.
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "digits_ddpm", "mnist", "mnist_cond", "mnist_large")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "diffusion"
  c.model.channels = 32
  c.model.channel_mults = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.attention_resolutions = (7,)
  c.model.num_heads = 1
  c.model.num_groups = 8
  c.model.dropout = 0.0
  c.model.schedule = "cosine"
  c.model.timesteps = 0
  c.model.gamma_min = -13.3
  c.model.gamma_max = 5.0
  c.model.parameterization = "eps"
  c.model.loss = "vdm"
  c.model.num_classes = 0
  c.model.label_dropout = 0.1
  c.model.ema_decay = 0.999
  c.model.ema_warmup = True
  c.model.sample_steps = 250
  c.model.sampler = "ancestral"
  c.model.guidance = 0.0
  c.model.fourier_features = ()
  c.optimizer.learning_rate = 2e-4
  c.optimizer.grad_clip_norm = 1.0

  if variant == "smoke":
    common.smoke(c)
    c.data.view = "8bit"
    c.model.channels = 8
    c.model.channel_mults = (1,)  # one resolution (the unit tests cover down/up-sampling)
    c.model.attention_resolutions = ()  # the middle block still attends
    c.model.num_groups = 4
    c.model.sample_steps = 10
    c.model.dropout = 0.1
    c.optimizer.learning_rate = 1e-3
  elif variant in ("digits", "digits_ddpm"):
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 4000
    c.model.attention_resolutions = (2,)
    c.optimizer.learning_rate = 1e-3
    c.log_every = 200
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 2000
    if variant == "digits_ddpm":
      c.model.loss = "simple"
      c.model.schedule = "linear"
      c.model.timesteps = 1000
  elif variant in ("mnist", "mnist_cond", "mnist_large"):
    c.data.name = "mnist"
    c.batch_size = 32
    c.total_steps = 8600
    c.optimizer.warmup_steps = 200
    c.optimizer.learning_rate = 1e-3
    c.model.channels = 16
    c.model.fourier_features = (6, 7)
    c.model.schedule = "learned"
    c.model.ema_decay = 0.999
    c.log_every = 200
    c.eval_every = 0
    c.eval_batch_size = 500
    c.checkpoint_every = 1000
    c.sample_every = 0
    c.num_samples = 64
    if variant == "mnist_cond":
      c.model.num_classes = 10
    if variant == "mnist_large":
      c.batch_size = 128
      c.total_steps = 200_000
      c.optimizer.learning_rate = 2e-4
      c.model.channels = 64
      c.model.num_res_blocks = 2
      c.model.dropout = 0.1
      c.model.ema_decay = 0.9999
      c.model.sample_steps = 1000
      c.eval_every = 20_000
      c.checkpoint_every = 5000
  else:
    raise common.unknown_variant("diffusion", variant, VARIANTS)
  return c
