"""The benchmark scripts' own logic (their numbers come from runs, not tests)."""

import xml.etree.ElementTree as ET

import pytest

from experiments.benchmarks import diffusion_samplers


def test_sampler_settings_parse_and_bad_ones_name_the_form():
  assert diffusion_samplers.parse_settings(["ddim:50", "ancestral:1000:500"]) == [
      ("ddim", 50, None), ("ancestral", 1000, 500)]
  for bad in ("ddim", "ddim:fifty", "ddim:5:6:7"):
    with pytest.raises(ValueError, match="sampler:steps"):
      diffusion_samplers.parse_settings([bad])


def test_quality_speed_plot_is_valid_svg_with_one_point_per_setting():
  rows = [{"sampler": "ddim", "steps": s, "fid": f, "images_per_second": r}
          for s, f, r in ((10, 40.0, 20.0), (50, 25.0, 4.0), (100, 22.0, 2.0))]
  svg = ET.fromstring(diffusion_samplers.svg_plot(rows, "test"))
  circles = [e for e in svg.iter() if e.tag.endswith("circle")]
  assert len(circles) == 3
  ys = [float(c.get("cy")) for c in circles]
  assert ys[0] < ys[2]  # a higher FID is drawn higher up (smaller y)
  xs = [float(c.get("cx")) for c in circles]
  assert xs[0] > xs[1] > xs[2]  # faster to the right
