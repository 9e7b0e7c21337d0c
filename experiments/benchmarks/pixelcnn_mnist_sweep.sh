#!/usr/bin/env bash
# The sweep that sized the `mnist` variant of PixelCNN (README, "Pixel models"): eight
# sizes and peak learning rates of `experiments/configs/pixelcnn.py:mnist` at the
# example budget of two CPU hours (8,500 to 9,500 steps of batch 32), all launched at
# once on one accelerator (each takes a tenth of its memory), then the test NLL of
# each. About 5 minutes on one H100; far too slow for a CPU.
#   GENJAX_MNIST_DIR=/path/to/mnist bash experiments/benchmarks/pixelcnn_mnist_sweep.sh [OUTDIR]
set -euo pipefail
OUT=${1:-runs/pixelcnn_mnist_sweep}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.1}
run() {  # NAME FEATURES BLOCKS STEPS [--config.x=y ...]
  local name=$1 features=$2 blocks=$3 steps=$4
  shift 4
  python -m experiments.main --config=experiments/configs/pixelcnn.py:mnist \
    --workdir="$OUT/$name" --config.model.features="$features" \
    --config.model.num_layers="$blocks" --config.total_steps="$steps" \
    --config.eval_every=3000 --config.checkpoint_every=100000 --config.log_every=1000 \
    --config.sample_every=0 "$@" > "$OUT/$name.log" 2>&1
}
t0=$(date +%s)
run 128x8_lr1e-3 128 8 9000 --config.optimizer.learning_rate=1e-3 &
run 96x10_lr1e-3 96 10 9500 --config.optimizer.learning_rate=1e-3 &
run 80x14_lr1e-3 80 14 8500 --config.optimizer.learning_rate=1e-3 &
run 80x14_lr2e-3 80 14 8500 --config.optimizer.learning_rate=2e-3 &
run 48x30_lr1e-3 48 30 9500 --config.optimizer.learning_rate=1e-3 &
run 64x20_lr1e-3 64 20 9000 --config.optimizer.learning_rate=1e-3 &
run 64x20_lr2e-3 64 20 9000 --config.optimizer.learning_rate=2e-3 &
run 64x20_lr3e-3 64 20 9000 --config.optimizer.learning_rate=3e-3 &
wait
for log in "$OUT"/*.log; do
  echo "$(basename "$log" .log): $(grep 'eval at step' "$log" | tail -1)"
done
echo "wall time: $(( $(date +%s) - t0 )) s on $(python -c 'import jax; print(jax.devices()[0].device_kind)')"
