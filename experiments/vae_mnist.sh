#!/usr/bin/env bash
# The README's MNIST VAE result: train the `mnist` variant of the VAE on dynamically
# binarized MNIST, then the IWAE (k=5000) NLL on the full test set with a fixed-seed
# binarization, then the learning curve. Prints wall times.
#   GENJAX_MNIST_DIR=/path/to/mnist bash experiments/vae_mnist.sh [WORKDIR] [--config.x=y ...]
set -euo pipefail
WORKDIR=${1:-runs/vae_mnist}
shift || true
t0=$(date +%s)
python -m experiments.main --config=experiments/configs/vae.py:mnist --workdir="$WORKDIR" "$@"
t1=$(date +%s)
python -m experiments.evaluate --workdir="$WORKDIR" --num_samples=5000
t2=$(date +%s)
python -m experiments.curve --workdir="$WORKDIR"
echo "train wall time: $((t1 - t0)) s; IWAE k=5000 evaluation wall time: $((t2 - t1)) s"
echo "hardware: $(nproc) CPU cores, $(python -c 'import jax; print(jax.devices()[0].device_kind)')"
