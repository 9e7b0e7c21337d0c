r"""PixelCNN++ (Salimans et al. 2017) on 8-bit digits or 8-bit MNIST (bits/dim).

Variants:
  smoke:  a tiny PixelCNN++ on 8-bit digits, 20 steps, seconds on a CPU (tests use it).
  digits: the embedded 8x8 digits at 8 bits (no download), 3 scales (8 -> 4 -> 2),
          32 features, 2 gated resnet blocks per scale, 5 logistics:
            python -m experiments.main --config=experiments/configs/pixelcnn_pp.py:digits \
                --workdir=runs/pixelcnn_pp_digits
  mnist:  8-bit MNIST (28 -> 14 -> 7), 32 features, 1 block per scale, 5 logistics,
          dropout 0.1, batch 16, 3000 steps. Sized for ~30 minutes on one core of
          this CPU. Measured under heavy contention (two trainings at higher
          priority; the process got ~26 s of CPU in 10 min of wall time):
          ``experiments.inspect --time_steps=10`` gave 7.9 s a step, compile 267 s,
          19.8 GFLOP a step (XLA cost analysis). Unloaded, at the ~35 GFLOP/s one
          core reaches on conv steps (DESIGN.md), a step is ~0.6 s: 3000 steps
          ~30 minutes. Re-measure on an idle CPU before relying on it.
            python -m experiments.main --config=experiments/configs/pixelcnn_pp.py:mnist \
                --workdir=runs/pixelcnn_pp_mnist
            python -m experiments.evaluate --workdir=runs/pixelcnn_pp_mnist
            python -m experiments.sample --workdir=runs/pixelcnn_pp_mnist --num=16
          Result: 1.146 bits/dim (622.67 nats) on the test split after 3000
          steps in 24.3 min on one core (2.6 steps/s; the estimate above was
          far too slow).
  mnist_large: the paper's shape at MNIST scale (64 features, 3 blocks per scale,
          10 logistics, dropout 0.5), 50k steps of batch 32: for an accelerator.

The likelihood is exact (a discretized logistic mixture per pixel), so
``experiments.evaluate`` reports bits/dim on the 8-bit data directly. Samples use
the cached sampler (``genjax.models.pixelcnn_pp.sample(method="cached")``).
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "mnist", "mnist_large")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "pixelcnn_pp"
  c.model.features = 32
  c.model.num_resnet = 2
  c.model.num_scales = 3
  c.model.num_mixtures = 5
  c.model.dropout = 0.0
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip_norm = 100.0

  if variant == "smoke":
    common.smoke(c)
    c.data.view = "8bit"
    c.model.features = 8
    c.model.num_resnet = 1
    c.model.num_scales = 2
    c.model.num_mixtures = 2
    c.model.dropout = 0.1
  elif variant == "digits":
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 4000
    c.log_every = 200
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 2000
  elif variant in ("mnist", "mnist_large"):
    c.data.name = "mnist"
    c.batch_size = 16
    c.total_steps = 3000
    c.optimizer.warmup_steps = 200
    c.model.num_resnet = 1
    c.model.dropout = 0.1
    c.log_every = 100
    c.eval_every = 0
    c.eval_batch_size = 500
    c.checkpoint_every = 1000
    c.sample_every = 0
    c.num_samples = 16
    if variant == "mnist_large":
      c.batch_size = 32
      c.total_steps = 50_000
      c.model.features = 64
      c.model.num_resnet = 3
      c.model.num_mixtures = 10
      c.model.dropout = 0.5
      c.eval_every = 10_000
      c.checkpoint_every = 2500
  else:
    raise common.unknown_variant("pixelcnn_pp", variant, VARIANTS)
  return c
