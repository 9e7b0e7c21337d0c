r"""Gated PixelCNN (van den Oord et al. 2016) on digits or MNIST, optionally class-conditional.

Variants:
  smoke:  a tiny Gated PixelCNN on digits, 20 steps, seconds on a CPU (tests use it).
  digits: the embedded 8x8 digits (no download), 32 gated units, 4 layers:
            python -m experiments.main \
                --config=experiments/configs/gated_pixelcnn.py:digits \
                --workdir=runs/gated_pixelcnn_digits
  digits_conditional: as digits, conditioned on the digit class (samples then
          cycle through the classes 0..9).
  mnist:  dynamically binarized MNIST, 64 gated units per stack, 10 layers (7x7
          then 3x3 receptive fields; 807k parameters), batch 32, 8,500 steps on
          a cosine schedule. Aim: <= 84 nats test NLL within 2 hours on this
          2-core CPU. Result: 83.38 nats on the full test split (84.84 at 4,250
          steps) in 105.4 min wall on both cores (0.73 s a step), evaluation,
          checkpoints and samples included. The earlier size (32 units, 6 layers,
          20k steps) reached only 86.80 nats in 96.9 min on one core.
            python -m experiments.main \
                --config=experiments/configs/gated_pixelcnn.py:mnist \
                --workdir=runs/gated_pixelcnn_mnist
            python -m experiments.evaluate --workdir=runs/gated_pixelcnn_mnist
            python -m experiments.sample --workdir=runs/gated_pixelcnn_mnist --num=64
  mnist_conditional: as mnist, class-conditional.
  mnist8bit: 8-bit MNIST with a 256-way softmax per pixel (bits/dim); not run yet.
"""

from __future__ import annotations

from experiments.configs import common
from experiments.configs import pixelcnn


VARIANTS = ("smoke", "digits", "digits_conditional", "mnist", "mnist_conditional",
            "mnist8bit")


def get_config(variant: str = "digits"):
  if variant not in VARIANTS:
    raise common.unknown_variant("gated_pixelcnn", variant, VARIANTS)
  base, _, conditional = variant.partition("_")
  c = pixelcnn.shared(base)  # the data, logging and checkpoints of every pixel model
  c.model.name = "gated_pixelcnn"
  c.model.num_classes = 10 if conditional else 0
  if base == "smoke":
    c.model.num_layers = 2
  elif base.startswith("mnist"):
    c.model.features = 64
    c.model.num_layers = 10
    c.total_steps = 8_500  # ~0.69 s a step on both cores of this CPU: ~100 minutes
    c.eval_every = 4_250
    c.sample_every = 8_500
  return c
