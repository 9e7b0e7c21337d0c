r"""Variational autoencoder (Kingma & Welling 2014) on binarized digits or MNIST.

Variants:
  smoke:  a tiny MLP VAE on digits, 20 steps, seconds on a CPU (tests use it).
  digits: the embedded default (scikit-learn's 8x8 digits, no download); 4,000
          steps trained in 46 s on the 2-core CPU with its load average at 6-7
          (another job running; about 10 s when idle). Final test evaluation: IWAE bound with k=1 (a one-sample
          estimate) 22.30 nats, -ELBO 22.44 nats; experiments.evaluate's k=5000
          IWAE bound 21.98 nats:
            python -m experiments.main --config=experiments/configs/vae.py:digits \
                --workdir=runs/vae_digits
  digits2d: as digits with a 2-D latent space, for the latent map.
  mnist:  dynamically binarized MNIST, MLP 784-512-512-50 with a Bernoulli decoder,
          trained for a fixed budget sized to about 45 minutes on a 2-core CPU:
            python -m experiments.main --config=experiments/configs/vae.py:mnist \
                --workdir=runs/vae_mnist
            python -m experiments.evaluate --workdir=runs/vae_mnist --num_samples=5000
          Result (experiments/vae_mnist.sh, 2-core AMD EPYC CPU, jax 0.10.2):
          IWAE k=5000 test NLL 84.34 nats, test ELBO -88.02 nats, after 49.0 min
          of training (260k steps); the k=5000 evaluation took 16.4 min.
  mnist_conv: the convolutional encoder/decoder on binarized MNIST (about 0.2 s
          a step on a 2-core CPU: 50k steps take about 3 hours; meant for a GPU).
  mnist8bit: 8-bit MNIST with a discretized logistic decoder (bits/dim).
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "digits2d", "mnist", "mnist_conv", "mnist8bit")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.model.name = "vae"
  c.model.likelihood = "bernoulli"
  c.model.architecture = "mlp"
  c.model.hidden = (256, 256)
  c.model.channels = (32, 64)
  c.model.latent_dim = 16
  c.model.beta = 1.0
  c.model.activation = "silu"

  if variant == "smoke":
    common.smoke(c)
    c.model.hidden = (32,)
    c.model.latent_dim = 4
  elif variant in ("digits", "digits2d"):
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 4000
    c.log_every = 200
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 1000
    if variant == "digits2d":
      c.model.latent_dim = 2
  elif variant in ("mnist", "mnist_conv", "mnist8bit"):
    c.data.name = "mnist"
    c.batch_size = 128
    c.total_steps = 260_000          # 555 epochs
    c.optimizer.warmup_steps = 1000
    c.model.hidden = (512, 512)
    c.model.latent_dim = 50
    c.log_every = 2000
    c.eval_every = 25_000
    c.eval_batch_size = 1000
    c.checkpoint_every = 25_000
    c.sample_every = 50_000
    if variant == "mnist_conv":
      c.model.architecture = "conv"
      c.total_steps = 50_000
    if variant == "mnist8bit":
      c.data.view = "8bit"
      c.model.likelihood = "discretized_logistic"
  else:
    raise common.unknown_variant("vae", variant, VARIANTS)
  return c
