r"""GPT (decoder-only transformer) on text: nanoGPT's recipes, character level or BPE.

Data: ``config.data.name="text"`` reads a directory of ``.txt`` files, one document
per file (``--config.data.text_dir=DIR``, or ``$GENJAX_TEXT_DIR`` when that is empty);
``"counting"`` is a small corpus that genjax generates (no files). The test split
holds out whole documents: those named in ``data.holdout``, else every
``data.holdout_every``-th in sorted order. Tokenizer: ``data.tokenizer`` ``"char"``
(the training split's characters) or ``"bpe"`` (byte-level BPE of ``data.vocab_size``
ids); it is saved in the work directory.

Variants:
  smoke:  2 layers of width 32 on the generated counting corpus, 20 steps, seconds on
          a CPU (the tests use it).
  shakespeare_char: nanoGPT's CPU recipe on Shakespeare's works, character level
          (4 layers, 4 heads, width 128, block 64, batch 12, 2,000 iterations,
          learning rate 1e-3 with 100 warm-up steps and cosine decay to 1e-4, AdamW
          betas (0.9, 0.99), weight decay 0.1, clipping at 1.0, dropout 0); held-out
          works: Hamlet, Macbeth, The Tempest, Twelfth Night:
            GENJAX_TEXT_DIR=/path/to/shakespeare python -m experiments.main \
                --config=experiments/configs/gpt.py:shakespeare_char --workdir=runs/gpt_char
          Result: see the README (GPT on Shakespeare).
  shakespeare_char_gpu: nanoGPT's GPU recipe (6 layers, 6 heads, width 384, block
          256, batch 64, 5,000 iterations, dropout 0.2), bfloat16 compute.
  shakespeare_bpe: the CPU recipe over byte-level BPE tokens (vocabulary 1,024), for
          bits per character against the character-level run.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

VARIANTS = ("smoke", "shakespeare_char", "shakespeare_char_gpu", "shakespeare_bpe")
SHAKESPEARE_HOLDOUT = ("hamlet_gut", "macbeth_gut", "tempest_gut", "twelfth_night_gut")


def get_config(variant: str = "shakespeare_char"):
  c = common.base_config()
  c.data = ml_collections.ConfigDict()
  c.data.name = "text"             # "text" (a directory of .txt files) or "counting"
  c.data.text_dir = ""             # "" = $GENJAX_TEXT_DIR
  c.data.holdout = SHAKESPEARE_HOLDOUT  # test documents (file names without .txt)
  c.data.holdout_every = 0         # else: every k-th document in sorted order
  c.data.tokenizer = "char"        # "char" | "bpe"
  c.data.vocab_size = 0            # BPE vocabulary size (char: from the data)
  c.data.data_dir = ""             # prepared-data cache; "" = $GENJAX_DATA_DIR or ~/.cache/genjax

  c.model = ml_collections.ConfigDict()
  c.model.name = "gpt"
  c.model.vocab_size = 0           # filled from the tokenizer
  c.model.block_size = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_ratio = 4
  c.model.dropout = 0.0
  c.model.positions = "learned"    # "learned" | "rotary"
  c.model.bias = True
  c.model.dtype = "float32"        # "float32" | "bfloat16" (compute; parameters stay float32)

  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.final_lr_fraction = 0.1
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0

  c.batch_size = 12
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 1000
  c.eval_batch_size = 256          # windows of block_size + 1 tokens per eval batch
  c.checkpoint_every = 1000
  c.sample_every = 0
  c.num_samples = 2                # texts per sample file
  c.sample_tokens = 256            # tokens drawn per sample

  if variant == "smoke":
    common.smoke(c)
    c.data.name = "counting"
    c.data.holdout = ()
    c.data.holdout_every = 10
    c.model.block_size = 16
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.width = 32
    c.batch_size = 8
    c.eval_batch_size = 64
    c.num_samples = 2
    c.sample_tokens = 32
  elif variant == "shakespeare_char":
    pass
  elif variant == "shakespeare_char_gpu":
    c.model.block_size = 256
    c.model.num_layers = 6
    c.model.num_heads = 6
    c.model.width = 384
    c.model.dropout = 0.2
    c.model.dtype = "bfloat16"
    c.batch_size = 64
    c.total_steps = 5000
    c.eval_every = 500
    c.checkpoint_every = 1000
    c.log_every = 50
  elif variant == "shakespeare_bpe":
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 1024
  else:
    raise common.unknown_variant("gpt", variant, VARIANTS)
  return c
