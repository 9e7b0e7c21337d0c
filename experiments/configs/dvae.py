r"""Discrete image tokenizers for DALL-E: a dVAE (Gumbel-softmax) or a VQ-VAE.

An image becomes a grid of tokens from a codebook (two stride-2 stages: MNIST 28x28
-> 7x7, the 8x8 digits -> 2x2); `experiments/configs/dalle.py` trains its
transformer on them.

Variants:
  smoke:   a tiny dVAE on the 8x8 digits, 20 steps, seconds on a CPU (the tests and
           the DALL-E smoke variant use it).
  digits:  the 8x8 digits, 64 codes.
  mnist:   8-bit MNIST, 512 codes, Gumbel-softmax with the temperature annealed from
           1 to 1/16, discretized logistic decoder:
             python -m experiments.main --config=experiments/configs/dvae.py:mnist \
                 --workdir=runs/dvae_mnist
           Result: see the README (DALL-E).
  mnist_vq: the same with a VQ-VAE (EMA codebook, dead codes restarted).
"""

from __future__ import annotations

from experiments.configs import common

VARIANTS = ("smoke", "digits", "mnist", "mnist_vq")


def get_config(variant: str = "mnist"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "dvae"
  c.model.quantizer = "gumbel"       # "gumbel" (dVAE) | "vq" (VQ-VAE, EMA codebook)
  c.model.codebook_size = 512
  c.model.code_dim = 64
  c.model.channels = (16, 32)        # one stride-2 stage each: 28 -> 14 -> 7
  c.model.likelihood = "discretized_logistic"
  c.model.kl_weight = 1.0
  c.model.temperature_start = 1.0
  c.model.temperature_end = 1.0 / 16
  c.model.anneal_steps = 3000
  c.model.commitment = 0.25
  c.model.ema_decay = 0.99
  c.model.dead_threshold = 0.01
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip_norm = 1.0
  if variant == "smoke":
    common.smoke(c)
    c.model.codebook_size = 16
    c.model.code_dim = 8
    c.model.channels = (8, 16)
    c.model.anneal_steps = 20
  elif variant == "digits":
    c.data.name = "digits"
    c.model.codebook_size = 64
    c.model.code_dim = 32
    c.batch_size = 64
    c.total_steps = 3000
    c.model.anneal_steps = 2000
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 1000
  elif variant in ("mnist", "mnist_vq"):
    c.data.name = "mnist"
    c.batch_size = 64
    c.total_steps = 4000
    c.log_every = 200
    c.eval_every = 2000
    c.eval_batch_size = 500
    c.checkpoint_every = 1000
    c.sample_every = 2000
    if variant == "mnist_vq":
      c.model.quantizer = "vq"
  else:
    raise common.unknown_variant("dvae", variant, VARIANTS)
  return c
