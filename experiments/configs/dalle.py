r"""DALL-E: one transformer over caption tokens and discrete image tokens (digit strips).

Stage 1 is an image tokenizer run (`experiments/configs/dvae.py`), named by
``config.model.tokenizer_workdir``; when that is empty, the launcher trains the
``image_tokenizer`` block of this config first, into ``WORKDIR/image_tokenizer``.
Stage 2 (this config) trains the transformer on captioned strips of 1 to 3 digits
(`genjax.data.captions`); strips with the held-out neighbours ``data.holdout_pairs``
never appear in training.

Variants:
  smoke:  the 8x8 digits, a tiny tokenizer trained first (20 steps), a tiny
          transformer, 20 steps: seconds on a CPU, from nothing:
            python -m experiments.main --config=experiments/configs/dalle.py:smoke \
                --workdir=runs/dalle_smoke
  digits: the 8x8 digits (2x2 tokens per digit), trains its own tokenizer.
  mnist:  MNIST strips (28 x 84, 3 x 49 tokens), with the tokenizer of
          `dvae.py:mnist` (trained first unless --config.model.tokenizer_workdir):
            python -m experiments.main --config=experiments/configs/dalle.py:mnist \
                --workdir=runs/dalle_mnist --config.model.tokenizer_workdir=runs/dvae_mnist
            python -m experiments.sample --workdir=runs/dalle_mnist --caption="two seven" \
                --num=16 --candidates=8 --guidance=3
            python -m experiments.benchmarks.caption_accuracy --workdir=runs/dalle_mnist \
                --guidance=3 --temperature=0.9 --top_k=32
          Result: see the README (DALL-E, caption accuracy).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common
from experiments.configs import dvae

VARIANTS = ("smoke", "digits", "mnist")


def get_config(variant: str = "mnist"):
  c = common.base_config()
  c.data = ml_collections.ConfigDict()
  c.data.name = "captions"
  c.data.source = "mnist"            # "mnist" | "digits": the digits of the strips
  c.data.holdout_pairs = ((8, 3),)   # neighbouring digits never seen in training
  c.data.num_test = 1000             # strips of the test and held-out evaluation sets
  c.data.num_heldout = 500
  c.data.data_dir = ""
  c.data.mnist_dir = ""

  c.model = ml_collections.ConfigDict()
  c.model.name = "dalle"
  c.model.tokenizer_workdir = ""     # "" = train image_tokenizer into WORKDIR/image_tokenizer
  c.model.tokenizer = ml_collections.ConfigDict()  # filled from the tokenizer run
  c.model.slots = 3
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_ratio = 4
  c.model.dropout = 0.0
  c.model.bias = True
  c.model.dtype = "float32"
  c.model.clip_width = 64
  # strips trained with the empty caption, so that sampling can use classifier-free
  # guidance (dalle.sample(..., guidance=s)); 0 turns it off
  c.model.caption_dropout = 0.1

  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.final_lr_fraction = 0.1
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip_norm = 1.0

  c.batch_size = 16
  c.total_steps = 4000
  c.log_every = 100
  c.eval_every = 2000
  c.eval_batch_size = 100
  c.checkpoint_every = 1000
  c.sample_every = 2000
  c.num_samples = 16
  c.image_tokenizer = dvae.get_config("mnist")

  if variant == "smoke":
    common.smoke(c)
    c.data.name = "captions"
    c.data.source = "digits"
    c.data.num_test = 40
    c.data.num_heldout = 16
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.width = 32
    c.model.clip_width = 16
    c.batch_size = 8
    c.eval_batch_size = 20
    c.num_samples = 4
    c.image_tokenizer = dvae.get_config("smoke")
  elif variant == "digits":
    c.data.source = "digits"
    c.total_steps = 3000
    c.image_tokenizer = dvae.get_config("digits")
  elif variant == "mnist":
    # 128,000 strips (twice the first recipe's 4,000 x 16): the held-out loss
    # was still falling there, and a batch of 32 gives the scorer 31 in-batch and
    # 32 hard negatives per strip
    c.batch_size = 32
    c.total_steps = 4000
  else:
    raise common.unknown_variant("dalle", variant, VARIANTS)
  return c
