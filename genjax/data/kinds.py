"""The data sets' names and kinds, importable without JAX or the data stack.

The launchers check a user's flags against a run's kind (``image``, ``text``,
``captions``) before JAX starts; `genjax.data.pipeline`, `genjax.data.text` and
`genjax.data.run_data` take their names from here.
"""

from __future__ import annotations

IMAGE_DATASETS = ("digits", "mnist")   # genjax.data.pipeline
TEXT_DATASETS = ("text", "counting")   # genjax.data.text
CAPTION_DATASETS = ("captions",)       # captioned digit strips (genjax.data.captions)


def kind(name: str) -> str:
  """``"image"``, ``"text"`` or ``"captions"`` (captioned digit strips).

  Raises:
    KeyError: naming every known dataset.
  """
  if name in IMAGE_DATASETS:
    return "image"
  if name in TEXT_DATASETS:
    return "text"
  if name in CAPTION_DATASETS:
    return "captions"
  raise KeyError(f"unknown dataset {name!r}; known datasets: "
                 f"{', '.join(IMAGE_DATASETS + TEXT_DATASETS + CAPTION_DATASETS)}. "
                 "Set config.data.name to one of them.")
