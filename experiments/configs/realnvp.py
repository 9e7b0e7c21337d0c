r"""RealNVP (Dinh et al. 2017) on 8-bit digits or MNIST; bits/dim on the 8-bit data.

Variants:
  smoke:  a tiny RealNVP on the 8x8 digits (1 scale: 8x8x1 checkerboard, 4x4x4
          channel-wise, split, 4x4x2 checkerboard; 2 steps each, width 8), 20 steps,
          seconds on a CPU (tests use it).
  digits: scikit-learn's 8x8 digits (embedded, no download), 2 scales (8 -> 4 -> 2),
          width 32, a few minutes on a 2-core CPU:
            python -m experiments.main --config=experiments/configs/realnvp.py:digits \
                --workdir=runs/realnvp_digits
  mnist:  8-bit MNIST 28x28x1 with the logit transform (alpha = 0.05). Two scales,
          because each scale squeezes H and W by 2 and 28 = 4 * 7: checkerboard
          steps at 28x28x1, channel-wise steps at 14x14x4, split to 14x14x2,
          checkerboard at 14x14x2, channel-wise at 7x7x8, split to 7x7x4, final
          checkerboard steps at 7x7x4; 3 scales would need a side divisible by 8 and
          are refused. 2 steps (4 couplings) per block, 20 couplings in all, each
          conditioner conv3x3-conv1x1 of width 48 with one 3x3 ResBlock (948,432
          parameters). Adam 1e-3, 200 warm-up steps, cosine decay, batch 16,
          16,000 steps (4.3 epochs):
            python -m experiments.main --config=experiments/configs/realnvp.py:mnist \
                --workdir=runs/realnvp_mnist
            python -m experiments.evaluate --workdir=runs/realnvp_mnist
            python -m experiments.sample --workdir=runs/realnvp_mnist
          Result: 1.2091 bits/dim (657.06 nats) on the full 10,000-image test split
          (1.2887 at step 8000), 72.6 min wall on a 2-core AMD EPYC CPU (jax 0.10.2),
          sharing it with the glow:mnist run (one core each, 3.4 steps/s).
  The step time of any variant: python -m experiments.inspect \
      --config=experiments/configs/realnvp.py:mnist --time_steps=10
"""

from __future__ import annotations

from experiments.configs import common


VARIANTS = ("smoke", "digits", "mnist")


def get_config(variant: str = "digits"):
  c = common.base_config()
  c.data.view = "8bit"
  c.model.name = "realnvp"
  c.model.num_levels = 2           # scales; H and W must be divisible by 2**num_levels
  c.model.num_steps = 2            # steps per block, two couplings each (stacked, one lax.scan)
  c.model.hidden = 64              # conditioner width
  c.model.num_blocks = 1           # 3x3 ResBlocks per conditioner
  c.model.coupling = "affine"      # affine | additive
  c.model.scale = "tanh"           # tanh (RealNVP) | sigmoid (Glow)
  c.model.permutation = "none"     # channel-wise blocks: none (alternate halves) | reverse |
                                   # shuffle | conv1x1 | conv1x1_lu
  c.model.actnorm = True           # stands in for the paper's batch normalisation
  c.model.preprocess = "logit"     # logit | center
  c.model.alpha = 0.05
  c.model.activation = "relu"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.grad_clip_norm = 500.0  # the loss is in nats per example (hundreds)

  if variant == "smoke":
    common.smoke(c)
    c.model.num_levels = 1
    c.model.num_steps = 2
    c.model.hidden = 8
    c.model.num_blocks = 0
  elif variant == "digits":
    c.data.name = "digits"
    c.batch_size = 64
    c.total_steps = 3000
    c.model.hidden = 32
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.sample_every = 1000
  elif variant == "mnist":
    c.data.name = "mnist"
    c.batch_size = 16              # more updates per example pay on a CPU (see glow.py)
    c.total_steps = 16000
    c.model.num_steps = 2
    c.model.hidden = 48
    c.model.num_blocks = 1
    c.log_every = 200
    c.eval_every = 8000
    c.eval_batch_size = 500
    c.checkpoint_every = 2000
    c.sample_every = 8000
  else:
    raise common.unknown_variant("realnvp", variant, VARIANTS)
  return c
