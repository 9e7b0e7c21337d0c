r"""Runs a launcher as N JAX processes on this machine: a multi-host run, locally.

  python -m experiments.multiprocess --num_processes=2 [--devices_per_process=2] \
      -- experiments.main --config=experiments/configs/vae.py:smoke --workdir=runs/vae_mp
  python -m experiments.multiprocess --num_processes=2 -- experiments.evaluate \
      --workdir=runs/vae_mp

Process ``i`` runs ``python -m <module> <args>`` (or ``python <script.py> <args>``)
with ``GENJAX_COORDINATOR=127.0.0.1:<port>``, ``GENJAX_NUM_PROCESSES=N``,
``GENJAX_PROCESS_ID=i`` and, on the CPU, ``JAX_NUM_CPU_DEVICES``; the launchers'
``experiments.common.setup`` then joins the processes with
``jax.distributed.initialize`` (CPU collectives through gloo), so each process
drives its own devices of one global mesh, reads its own rows of every batch, and
process 0 alone writes the run's files. It is the same program that runs on the
hosts of a GPU cluster or a TPU pod, where each host starts one process itself
(``GENJAX_MULTIHOST=1`` finds the coordinator from the cluster's environment).

Each output line is prefixed with ``[i]``. When a process fails, the others are
stopped and this launcher exits with its status.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 2, "JAX processes to start")
_DEVICES = flags.DEFINE_integer(
    "devices_per_process", 2, "CPU devices of each process (JAX_NUM_CPU_DEVICES); 0: "
    "leave the platform and its devices alone (GPUs: CUDA_VISIBLE_DEVICES per process)")
_PORT = flags.DEFINE_integer("port", 0, "coordinator port on 127.0.0.1 (0: a free one)")
_TIMEOUT = flags.DEFINE_float("timeout", 0, "seconds before every process is stopped "
                              "(0: no limit)")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def command(target: list[str]) -> list[str]:
  """The command line of one process: a module (``pkg.mod``) or a ``.py`` script."""
  if not target:
    raise ValueError("name what to run after --, e.g. -- experiments.main --config=...")
  head, *rest = target
  return [sys.executable, head, *rest] if head.endswith(".py") else [
      sys.executable, "-m", head, *rest]


def environment(process_id: int, num_processes: int, port: int,
                devices_per_process: int) -> dict[str, str]:
  """The environment of process ``process_id``: the coordinator and, on the CPU,
  its devices."""
  env = dict(os.environ)
  env.update(GENJAX_COORDINATOR=f"127.0.0.1:{port}", GENJAX_NUM_PROCESSES=str(num_processes),
             GENJAX_PROCESS_ID=str(process_id), PYTHONUNBUFFERED="1")
  if devices_per_process:
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices_per_process))
  root = str(pathlib.Path(__file__).resolve().parents[1])  # `experiments` importable
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  return env


def _forward(stream, out, prefix: str) -> None:
  for line in stream:
    out.write(prefix + line)
    out.flush()


def run(target: list[str], num_processes: int = 2, devices_per_process: int = 2,
        port: int = 0, timeout: float | None = None) -> int:
  """Starts ``num_processes`` processes of ``target`` and waits for them.

  Args:
    target: ``[module or script.py, *args]``.
    num_processes: processes to start.
    devices_per_process: CPU devices of each (0: the platform's own devices).
    port: the coordinator's port (0: a free one).
    timeout: seconds before every process is stopped (None: no limit).

  Returns:
    0 when every process succeeded, else the status of the first that failed
    (124 after a timeout).
  """
  if num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
  port = port or _free_port()
  procs, threads = [], []
  for i in range(num_processes):
    proc = subprocess.Popen(command(target), env=environment(i, num_processes, port,
                                                             devices_per_process),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
      thread = threading.Thread(target=_forward, args=(stream, out, f"[{i}] "), daemon=True)
      thread.start()
      threads.append(thread)
  status = _wait(procs, timeout)
  for thread in threads:
    thread.join(timeout=10)
  return status


def _wait(procs: list[subprocess.Popen], timeout: float | None) -> int:
  """Waits for every process; on the first failure (or the timeout) stops the rest."""
  deadline = None if not timeout else time.time() + timeout
  while True:
    codes = [p.poll() for p in procs]
    failed = [c for c in codes if c not in (None, 0)]
    timed_out = deadline is not None and time.time() > deadline
    if failed or timed_out or all(c == 0 for c in codes):
      break
    time.sleep(0.1)
  if failed or timed_out:
    for p in procs:  # a process whose peer died would wait for it until JAX's timeout
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    for p in procs:
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return failed[0] if failed else 124
  return 0


def main(argv):
  status = run(argv[1:], _NUM_PROCESSES.value, _DEVICES.value, _PORT.value,
               _TIMEOUT.value or None)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
