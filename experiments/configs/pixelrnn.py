r"""PixelRNN (van den Oord et al. 2016): Row LSTM or Diagonal BiLSTM layers.

Variants:
  smoke:  a tiny Diagonal BiLSTM on digits, 20 steps (tests use it); mostly compile
          time: 2m20s for main.py on the loaded 2-core CPU.
  digits: the embedded 8x8 digits (no download), 16 LSTM units, 2 layers:
            python -m experiments.main --config=experiments/configs/pixelrnn.py:digits \
                --workdir=runs/pixelrnn_digits
  mnist:  dynamically binarized MNIST, a 7x7 mask-A layer then 4 residual Diagonal
          BiLSTM layers of 16 units (the paper's best MNIST model has 7 layers of
          16 units and reaches 79.20 nats), batch 32, peak learning rate 3e-3,
          gradients clipped at norm 1. A 4,000-step run at the earlier peak 1e-3
          (--config.total_steps=4000 --config.optimizer.learning_rate=1e-3)
          reached 88.40 nats on the test split in 20.9 min on both cores of the
          idle 2-core CPU. The learning rate and clipping come from 4,000-step
          runs on an H100 (`bash experiments/benchmarks/pixel_mnist_sweep.sh
          pixelrnn`; test NLL): clip 1, lr 1e-3: 88.00; no clip, 1e-3:
          90.35; clip 1, 3e-3: 84.44; no clip, 3e-3: 85.92 (clipping helps
          although the raw gradient norms are in the hundreds). Step time on
          the idle 2-core CPU (`python -m experiments.inspect --config=...:mnist
          --time_steps=5`): 0.31 s (diagonal_bilstm, 1.75 GFLOP) and 0.27 s
          (row_lstm, 1.67 GFLOP), so 20k steps take about 1h45m. (An earlier
          11 s was measured while two trainings and a test run held the cores.)
            python -m experiments.main --config=experiments/configs/pixelrnn.py:mnist \
                --workdir=runs/pixelrnn_mnist
            python -m experiments.evaluate --workdir=runs/pixelrnn_mnist
            python -m experiments.sample --workdir=runs/pixelrnn_mnist --num=16
  mnist8bit: 8-bit MNIST with a 256-way softmax per pixel (bits/dim); not run yet.

Switch the cell with ``--config.model.cell=row_lstm`` (a scan over 28 rows instead
of 55 skewed columns, both directions in one scan; its receptive field is a
triangle above each pixel).

The likelihood is exact (``log_likelihood`` sums the conditionals), so
``experiments.evaluate`` needs no importance samples. Samples are drawn with the
cached sampler (``genjax.models.pixelrnn.sample(method="cached")``: one LSTM step
per layer and sub-pixel); the MNIST variants draw 16 and only at the end.
"""

from __future__ import annotations

from experiments.configs import common
from experiments.configs import pixelcnn


VARIANTS = ("smoke", "digits", "mnist", "mnist8bit")


def get_config(variant: str = "digits"):
  if variant not in VARIANTS:
    raise common.unknown_variant("pixelrnn", variant, VARIANTS)
  c = pixelcnn.shared(variant)  # the data, logging and checkpoints of every pixel model
  c.model.name = "pixelrnn"
  c.model.cell = "diagonal_bilstm"
  c.model.features = 16
  c.model.num_layers = 2
  if variant == "smoke":
    c.model.features = 8
    c.model.num_layers = 1
  elif variant in ("mnist", "mnist8bit"):
    c.total_steps = 20_000
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.learning_rate = 3e-3
    c.model.num_layers = 4
    c.sample_every = 0  # only at the end
    c.num_samples = 16
  return c
