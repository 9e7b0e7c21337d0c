"""The launchers on a text run (GPT smoke, the generated counting corpus), as a user
runs them: train, resume, evaluate, sample, inspect, and the options that do not apply."""

import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GPT_CONFIG = "experiments/configs/gpt.py"


def _run(args, data_dir, check=True):
  env = dict(os.environ, GENJAX_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
             PYTHONUNBUFFERED="1")
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc


def _rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  """The smoke variant (20 steps), resumed to 30."""
  w = tmp_path_factory.mktemp("gpt")
  common = [f"--config={GPT_CONFIG}:smoke"]
  first = _run(["experiments.main", *common, f"--workdir={w}"], data_dir)
  second = _run(["experiments.main", *common, f"--workdir={w}", "--config.total_steps=30"],
                data_dir)
  return types.SimpleNamespace(workdir=w, first=first, second=second)


def test_train_logs_tokens_per_second_and_writes_text_samples_and_tokenizer(run):
  rows = _rows(run.workdir)
  train = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
  assert all(np.isfinite(r["loss"]) and r["tokens_per_sec"] > 0 for r in train)
  assert any("eval/bits_per_char" in r for r in rows)
  assert "tok/s" in run.first.stderr and "ETA" in run.first.stderr
  samples = sorted(p.name for p in (run.workdir / "samples").glob("step_*.txt"))
  assert samples[:2] == ["step_00000010.txt", "step_00000020.txt"]
  assert "=== sample 1 ===" in (run.workdir / "samples" / samples[0]).read_text()
  config = json.loads((run.workdir / "config.json").read_text())
  tokenizer = json.loads((run.workdir / "tokenizer.json").read_text())
  assert tokenizer["kind"] == "char"
  assert config["model"]["vocab_size"] == len(tokenizer["chars"]) + 1


def test_resume_continues_the_step_count_and_the_token_windows(run):
  """The resumed run restores the data iterator (the windows it would have drawn:
  tests/data/text_test.py checks them exactly) and continues the steps."""
  assert "resuming" in run.second.stderr and "from checkpoint step 20" in run.second.stderr
  steps = [r["step"] for r in _rows(run.workdir) if "loss" in r]
  assert steps == [5, 10, 15, 20, 25, 30]
  checkpoint = run.workdir / "checkpoints" / "20"
  data_state = json.loads((checkpoint / "data" / "metadata").read_text())
  assert data_state == {"next_index": 20}  # the grain iterator position: 20 batches read


def test_evaluate_reports_bits_per_character_over_every_held_out_token(run, data_dir):
  from genjax.data import text, tokenizers  # pylint: disable=g-import-not-at-top
  _run(["experiments.evaluate", f"--workdir={run.workdir}"], data_dir)
  out = json.loads((run.workdir / "eval.json").read_text())
  docs = text.counting_corpus()
  held_out = [n for i, n in enumerate(sorted(docs)) if i % 10 == 9]
  chars = sum(len(docs[n]) for n in held_out)
  assert out["num_tokens"] == chars - 1 and out["num_chars"] == chars - 1  # char level
  assert out["bits_per_char"] == pytest.approx(out["nats_per_token"] / np.log(2))
  assert out["perplexity"] == pytest.approx(np.exp(out["nats_per_token"]))
  tok = tokenizers.load(run.workdir / "tokenizer.json")
  assert out["nats_per_token"] < np.log(tok.vocab_size)  # it learned something
  assert out["tokenizer"] == "char" and out["step"] == 30


def test_sample_prints_the_prompt_and_its_continuations(run, data_dir, tmp_path):
  out = tmp_path / "s.txt"
  proc = _run(["experiments.sample", f"--workdir={run.workdir}", "--prompt=one hundred",
               "--num=3", "--max_new_tokens=20", "--top_k=5", "--temperature=0.8",
               f"--out={out}"], data_dir)
  assert proc.stdout.count("=== sample") == 3
  assert proc.stdout.count("one hundred") >= 3
  assert out.read_text().count("=== sample") == 3
  # an image-only option on a text run, a text-only option on an image run
  bad = _run(["experiments.sample", f"--workdir={run.workdir}", "--noextras"], data_dir,
             check=False)
  assert bad.returncode != 0
  assert "--extras apply to image runs only" in bad.stderr.strip().splitlines()[-1]
  bad = _run(["experiments.sample", f"--workdir={run.workdir}", "--guidance=2"], data_dir,
             check=False)
  assert bad.returncode != 0
  assert ("--guidance applies to diffusion and text-to-image runs only"
          in bad.stderr.strip().splitlines()[-1])
  image_run = tmp_path / "image_run"
  image_run.mkdir()
  (image_run / "config.json").write_text(json.dumps(
      {"model": {"name": "vae"}, "data": {"name": "digits"}}))
  bad = _run(["experiments.sample", f"--workdir={image_run}", "--prompt=hi"], data_dir,
             check=False)
  assert bad.returncode != 0 and "--prompt apply to text runs only" in bad.stderr


def test_inspect_reports_model_flops_utilisation(data_dir, tmp_path):
  proc = _run(["experiments.inspect", f"--config={GPT_CONFIG}:smoke", "--time_steps=3",
               "--peak_tflops=0.2", f"--json={tmp_path}/n.json"], data_dir)
  numbers = json.loads((tmp_path / "n.json").read_text())
  assert numbers["tokens_per_second"] > 0 and 0 < numbers["mfu"] < 1
  assert "MFU" in proc.stdout and "tokens/s" in proc.stdout
