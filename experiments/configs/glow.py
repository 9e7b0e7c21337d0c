r"""Glow (Kingma & Dhariwal 2018) on 8-bit digits or MNIST; bits/dim on the 8-bit data.

Variants:
  smoke:  a tiny Glow on the 8x8 digits (2 levels: 8 -> 4 -> 2, 2 steps each, width 8),
          20 steps, seconds on a CPU (tests use it).
  digits: scikit-learn's 8x8 digits (embedded, no download), 2 levels of 4 steps,
          width 32, logit preprocessing, about two minutes on a 2-core CPU:
            python -m experiments.main --config=experiments/configs/glow.py:digits \
                --workdir=runs/glow_digits
  mnist:  8-bit MNIST 28x28x1. Two levels, because each level squeezes H and W by 2
          and 28 = 4 * 7: 28x28x1 -> 14x14x4 (8 steps, split to 14x14x2) -> 7x7x8
          (8 steps); 3 levels would need a side divisible by 8 and are refused.
          Each step is ActNorm, an LU 1x1 convolution and an affine coupling whose
          conditioner is conv3x3-relu-conv1x1 (width 96), one 3x3 ResBlock and a
          zero-initialised conv3x3 (2,935,600 parameters); the input goes through
          RealNVP's logit transform (see below). Adam 1e-3, 200 warm-up steps,
          cosine decay, batch 16, 18,000 steps (4.8 epochs):
            python -m experiments.main --config=experiments/configs/glow.py:mnist \
                --workdir=runs/glow_mnist
            python -m experiments.evaluate --workdir=runs/glow_mnist
            python -m experiments.sample --workdir=runs/glow_mnist
          Result: 1.2576 bits/dim (683.41 nats) on the full 10,000-image test split
          (1.4349 at step 6000, 1.3090 at step 12000), 104.4 min wall on a 2-core
          AMD EPYC CPU (jax 0.10.2); for its first 95 minutes it shared the CPU with
          the realnvp:mnist run (one core each, ~3 steps/s; 6 steps/s alone).
          The same model at batch 64 for 6,000 steps (384k examples, 66 min alone)
          reached 1.3442: on a CPU, more updates per example win.
  The step time of any variant: python -m experiments.inspect \
      --config=experiments/configs/glow.py:mnist --time_steps=10
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "mnist")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "glow"
  c.model.num_levels = 2           # H and W must be divisible by 2**num_levels
  c.model.num_steps = 8            # K flow steps per level (stacked, one lax.scan)
  c.model.hidden = 64              # conditioner width
  c.model.num_blocks = 1           # 3x3 ResBlocks per conditioner
  c.model.coupling = "affine"      # affine | additive
  c.model.scale = "sigmoid"        # sigmoid (Glow) | tanh (RealNVP)
  c.model.permutation = "conv1x1_lu"  # conv1x1_lu | conv1x1 | reverse | shuffle | none
  c.model.actnorm = True
  c.model.preprocess = "center"    # center (x - 0.5) | logit
  c.model.alpha = 0.05             # logit preprocessing only
  c.model.activation = "relu"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.grad_clip_norm = 500.0  # the loss is in nats per example (hundreds)

  if variant == "smoke":
    common.smoke(c)
    c.model.num_steps = 2
    c.model.hidden = 8
    c.model.num_blocks = 0
  elif variant == "digits":
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 3000
    c.model.num_steps = 4
    c.model.hidden = 32
    c.model.preprocess = "logit"  # as for mnist (600 steps: 6.3 bits/dim with x - 0.5)
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 1000
  elif variant == "mnist":
    c.data.name = "mnist"
    # Batch 16: on the CPU the examples/s do not depend on the batch (~100/s), and in
    # a 6-minute calibration batch 16 reached a train loss of 880 nats where batch 64
    # needed 22 minutes: more updates per example win in a short budget.
    c.batch_size = 16
    c.total_steps = 18000
    c.model.num_steps = 8
    c.model.hidden = 96
    c.model.num_blocks = 1
    # RealNVP's logit transform instead of Glow's x - 0.5: its Jacobian expands the
    # near-zero background of MNIST ~19x per pixel for free (150 steps: 2.75 vs 4.1
    # bits/dim with x - 0.5), every term counted in bits/dim.
    c.model.preprocess = "logit"
    c.log_every = 200
    c.eval_every = 6000
    c.eval_batch_size = 500
    c.checkpoint_every = 2000
    c.sample_every = 6000
  else:
    raise common.unknown_variant("glow", variant, VARIANTS)
  return c
