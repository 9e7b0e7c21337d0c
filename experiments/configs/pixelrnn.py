r"""PixelRNN (van den Oord et al. 2016): Row LSTM or Diagonal BiLSTM layers.

Variants:
  smoke:  a tiny Diagonal BiLSTM on digits, 20 steps (tests use it); mostly compile
          time: 2m20s for main.py on the loaded 2-core CPU.
  digits: the embedded 8x8 digits (no download), 16 LSTM units, 2 layers:
            python -m experiments.main --config=experiments/configs/pixelrnn.py:digits \
                --workdir=runs/pixelrnn_digits
  mnist:  dynamically binarized MNIST, a 7x7 mask-A layer then 4 residual Diagonal
          BiLSTM layers of 16 units (the paper's best MNIST model has 7 layers of
          16 units and reaches 79.20 nats), batch 32. Not run yet. Step time, measured
          with `python -m experiments.inspect --config=...:mnist --time_steps=5` on
          the 2-core CPU while two other trainings and a test run held the cores
          (load ~8), so an upper bound: 11.7 s (diagonal_bilstm, 1.7 GFLOP, 2.9 GB
          accessed) and 11.3 s (row_lstm, 1.7 GFLOP, 0.8 GB): the two cells cost
          about the same here, so the default is the paper's best, diagonal_bilstm.
          At such step times 20k steps are days, not hours: measure again on idle
          cores (or an accelerator) before launching.
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

from experiments.configs import pixelcnn


def get_config(variant: str = "digits"):
  if variant not in ("smoke", "digits", "mnist", "mnist8bit"):
    raise ValueError(
        f"unknown variant {variant!r} of pixelrnn; choose smoke, digits, mnist or mnist8bit")
  c = pixelcnn.get_config(variant)  # the same data, schedule and logging, except:
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
    c.model.num_layers = 4
    c.sample_every = 0  # only at the end
    c.num_samples = 16
  return c
