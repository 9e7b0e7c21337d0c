r"""DCGAN (Radford et al. 2016) on 8-bit digits or MNIST; hinge and WGAN-GP variants.

Variants:
  smoke:  a tiny DCGAN on 8-bit digits, 20 steps, seconds on a CPU (tests use it).
  digits: 8-bit scikit-learn digits (8x8, no download), non-saturating loss:
            python -m experiments.main --config=experiments/configs/dcgan.py:digits \
                --workdir=runs/dcgan_digits
          (no sample metrics: genjax has a feature network for 28x28 images only).
  mnist:  8-bit MNIST, non-saturating loss, Adam(2e-4, b1=0.5) for both players,
          generator EMA 0.999; then FID/KID/precision/recall on the test set:
            python -m experiments.main --config=experiments/configs/dcgan.py:mnist \
                --workdir=runs/dcgan_mnist
            python -m experiments.evaluate --workdir=runs/dcgan_mnist
          Three seeds against the VAE and the train-vs-test floor:
            python -m experiments.benchmarks.gan_quality --minutes=60 \
                --workdir=runs/gan_quality --vae_workdir=runs/vae_mnist
          Result: not run yet.
  mnist_small: as mnist with half the widths (generator and discriminator
          channels 32, 64): 4.0 instead of 15.4 GFLOP a step (XLA's count), for
          runs of minutes on a CPU. The benchmark of the README:
            python -m experiments.benchmarks.gan_quality --minutes=12 \
                --config=experiments/configs/dcgan.py:mnist_small \
                --workdir=runs/gan_quality --vae_workdir=runs/vae_mnist
          Result: FID 155.8, 134.8, 148.0 (seeds 0-2, ~2,450 steps, 9-11 CPU
          minutes each), recall 0.47-0.52, none diverged. It is the GAN of
          experiments.benchmarks.compare: in its 5-minute budget, FID 212.6 +- 7.3
          over 3 seeds (2,000 samples), below the VAE's 220.8 (README, "Every
          family on the same data and budget").
  mnist_hinge: as mnist with the hinge loss and a spectrally normalised
          discriminator (Miyato et al. 2018). Result: not run yet.
  mnist_wgan_gp: as mnist with WGAN-GP (lambda 10, 5 critic steps per generator
          step, each on its own 64 real images, so a batch of 320; Adam(1e-4,
          b1=0.5, b2=0.9)). Result: not run yet.
  mnist_cond: as mnist, class-conditional (projection discriminator). Result:
          not run yet.
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "mnist", "mnist_small", "mnist_hinge", "mnist_wgan_gp",
            "mnist_cond")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "dcgan"
  c.model.view = "8bit"
  c.model.latent_dim = 64
  c.model.g_channels = (64, 128)
  c.model.d_channels = (64, 128)
  c.model.g_norm = "layer"
  c.model.loss = "non_saturating"
  c.model.gp_weight = 10.0
  c.model.r1_weight = 0.0
  c.model.spectral_norm = False
  c.model.d_steps = 1
  c.model.ema_decay = 0.999
  c.model.ema_warmup = True        # decay min(0.999, (1 + t) / (10 + t)) at step t
  c.model.num_classes = 0

  c.optimizer.learning_rate = 2e-4
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_steps = 0
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  # Per-player overrides of any optimizer field (e.g. a two time-scale update rule).
  c.optimizer.generator = dict(learning_rate=2e-4)
  c.optimizer.discriminator = dict(learning_rate=2e-4)

  if variant == "smoke":
    common.smoke(c)
    c.optimizer.warmup_steps = 0
    c.model.latent_dim = 8
    c.model.g_channels = (8, 16)
    c.model.d_channels = (8, 16)
    c.model.ema_decay = 0.9
  elif variant == "digits":
    c.data.name = "digits"
    c.model.g_channels = (32, 64)
    c.model.d_channels = (32, 64)
    c.model.latent_dim = 32
    c.batch_size = 64
    c.total_steps = 5000
    c.log_every = 250
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 1000
  elif variant in ("mnist", "mnist_small", "mnist_hinge", "mnist_wgan_gp", "mnist_cond"):
    c.data.name = "mnist"
    c.batch_size = 64
    c.total_steps = 20_000
    c.log_every = 500
    c.eval_every = 5000
    c.eval_batch_size = 1000
    c.checkpoint_every = 2000
    c.sample_every = 2000
    if variant == "mnist_small":
      c.model.g_channels = (32, 64)
      c.model.d_channels = (32, 64)
    elif variant == "mnist_hinge":
      c.model.loss = "hinge"
      c.model.spectral_norm = True
    elif variant == "mnist_wgan_gp":
      c.model.loss = "wgan_gp"
      c.model.d_steps = 5
      c.batch_size = 64 * c.model.d_steps  # each critic step takes its own 64
      c.model.g_norm = "none"
      c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
      c.optimizer.generator = dict(learning_rate=1e-4)
      c.optimizer.discriminator = dict(learning_rate=1e-4)
    elif variant == "mnist_cond":
      c.model.num_classes = 10
  else:
    raise common.unknown_variant("dcgan", variant, VARIANTS)
  return c
