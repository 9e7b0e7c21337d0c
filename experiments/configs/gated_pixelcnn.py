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
          hours on a 2-core CPU. Calibration: not run yet; a layer costs about
          21 F^2 multiply-adds per pixel (vertical 2x3 and horizontal 1x2 gated
          convolutions and 1x1 links), a little more than PixelCNN's mnist.
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
