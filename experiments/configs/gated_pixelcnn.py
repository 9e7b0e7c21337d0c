r"""Gated PixelCNN (van den Oord et al. 2016) on digits or MNIST, optionally class-conditional.

Variants:
  smoke:  a tiny Gated PixelCNN on digits, 20 steps, seconds on a CPU (tests use it).
  digits: the embedded 8x8 digits (no download), 32 gated units, 4 layers:
            python -m experiments.main \
                --config=experiments/configs/gated_pixelcnn.py:digits \
                --workdir=runs/gated_pixelcnn_digits
  digits_conditional: as digits, conditioned on the digit class (samples then
          cycle through the classes 0..9).
  mnist:  dynamically binarized MNIST, 32 gated units per stack, 6 layers (7x7
          then 3x3 receptive fields), batch 32. Aim: <= 84 nats test NLL within 2
          hours on a 2-core CPU. Result: 86.80 nats after 20k steps in 96.9 min
          on one core (0.25 s a step; 89.09 at 5k, 87.01 at 15k): the target is
          missed on the CPU. With --config.model.features=64
          --config.model.num_layers=10 --config.batch_size=64
          --config.total_steps=25000 it reaches 81.65 nats in 4.4 min on an H200.
            python -m experiments.main \
                --config=experiments/configs/gated_pixelcnn.py:mnist \
                --workdir=runs/gated_pixelcnn_mnist
            python -m experiments.evaluate --workdir=runs/gated_pixelcnn_mnist
            python -m experiments.sample --workdir=runs/gated_pixelcnn_mnist --num=64
  mnist_conditional: as mnist, class-conditional.
  mnist8bit: 8-bit MNIST with a 256-way softmax per pixel (bits/dim); not run yet.
"""

from __future__ import annotations

from experiments.configs import pixelcnn


def get_config(variant: str = "digits"):
  base, _, conditional = variant.partition("_")
  if conditional not in ("", "conditional") or base not in (
      "smoke", "digits", "mnist", "mnist8bit"):
    raise ValueError(
        f"unknown variant {variant!r} of gated_pixelcnn; choose smoke, digits, "
        "digits_conditional, mnist, mnist_conditional or mnist8bit")
  c = pixelcnn.get_config(base)  # the same data, schedule and sizes, except:
  c.model.name = "gated_pixelcnn"
  c.model.num_classes = 10 if conditional else 0
  if base == "smoke":
    c.model.num_layers = 2
  elif base.startswith("mnist"):
    c.model.features = 32  # a gated layer costs ~3x a PixelCNN block of equal width
    c.total_steps = 20_000  # ~0.25 s a step on one core of this CPU: ~85 minutes
  return c
