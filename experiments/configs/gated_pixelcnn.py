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

from experiments.configs import common


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.model.name = "gated_pixelcnn"
  c.model.likelihood = "bernoulli"
  c.model.features = 32
  c.model.num_layers = 4
  c.model.first_kernel_size = 7
  c.model.kernel_size = 3
  c.model.output_features = 32
  c.model.num_classes = 0

  base, _, conditional = variant.partition("_")
  if conditional not in ("", "conditional"):
    base = variant
  if base == "smoke":
    common.smoke(c)
    c.model.features = 8
    c.model.num_layers = 2
    c.model.output_features = 8
  elif base == "digits":
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 4000
    c.log_every = 200
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 2000
  elif base in ("mnist", "mnist8bit"):
    c.data.name = "mnist"
    c.batch_size = 32
    c.total_steps = 25_000
    c.optimizer.warmup_steps = 500
    c.model.num_layers = 6
    c.model.output_features = 64
    c.log_every = 500
    c.eval_every = 5000
    c.eval_batch_size = 500
    c.checkpoint_every = 2500
    c.sample_every = 12_500
    if base == "mnist8bit":
      c.data.view = "8bit"
      c.model.likelihood = "categorical"
  else:
    raise ValueError(
        f"unknown variant {variant!r} of gated_pixelcnn; choose smoke, digits, "
        "digits_conditional, mnist, mnist_conditional or mnist8bit")
  if conditional == "conditional":
    c.model.num_classes = 10
  return c
