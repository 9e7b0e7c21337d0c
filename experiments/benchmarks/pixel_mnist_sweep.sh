#!/usr/bin/env bash
# The sweeps that set the `mnist` variants of PixelCNN and PixelRNN (README, "Pixel
# models"), run on one H100; far too slow for a CPU. All runs of a sweep launch at once
# on the one accelerator (each takes a fraction of its memory); then the last test
# NLL of each run and the wall time are printed.
#   pixelcnn: eight sizes and peak learning rates at the example budget of two CPU
#             hours (8,500 to 9,500 steps of batch 32); about 5.5 minutes.
#   pixelrnn: gradient clipping at norm 1 or none, peak learning rate 1e-3 or 3e-3,
#             4,000 steps; about 3.5 minutes.
#   GENJAX_MNIST_DIR=/path/to/mnist bash experiments/benchmarks/pixel_mnist_sweep.sh \
#       pixelcnn|pixelrnn [OUTDIR]
set -euo pipefail
MODEL=${1:?usage: pixel_mnist_sweep.sh pixelcnn|pixelrnn [OUTDIR]}
OUT=${2:-runs/${MODEL}_mnist_sweep}
mkdir -p "$OUT"
run() {  # NAME [--config.x=y ...]
  local name=$1
  shift
  python -m experiments.main --config="experiments/configs/$MODEL.py:mnist" \
    --workdir="$OUT/$name" --config.checkpoint_every=100000 --config.sample_every=0 \
    "$@" > "$OUT/$name.log" 2>&1
}
t0=$(date +%s)
case "$MODEL" in
  pixelcnn)
    export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.1}
    size() {  # NAME FEATURES BLOCKS STEPS LR
      run "$1" --config.model.features="$2" --config.model.num_layers="$3" \
        --config.total_steps="$4" --config.optimizer.learning_rate="$5" \
        --config.eval_every=3000 --config.log_every=1000
    }
    size 128x8_lr1e-3 128 8 9000 1e-3 &
    size 96x10_lr1e-3 96 10 9500 1e-3 &
    size 80x14_lr1e-3 80 14 8500 1e-3 &
    size 80x14_lr2e-3 80 14 8500 2e-3 &
    size 48x30_lr1e-3 48 30 9500 1e-3 &
    size 64x20_lr1e-3 64 20 9000 1e-3 &
    size 64x20_lr2e-3 64 20 9000 2e-3 &
    size 64x20_lr3e-3 64 20 9000 3e-3 &
    ;;
  pixelrnn)
    export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.2}
    opt() {  # NAME CLIP LR
      run "$1" --config.optimizer.grad_clip_norm="$2" --config.optimizer.learning_rate="$3" \
        --config.total_steps=4000 --config.eval_every=2000 --config.log_every=500
    }
    opt clip1_lr1e-3 1.0 1e-3 &
    opt noclip_lr1e-3 0.0 1e-3 &
    opt clip1_lr3e-3 1.0 3e-3 &
    opt noclip_lr3e-3 0.0 3e-3 &
    ;;
  *) echo "unknown model $MODEL: choose pixelcnn or pixelrnn" >&2; exit 2 ;;
esac
wait
for log in "$OUT"/*.log; do
  echo "$(basename "$log" .log): $(grep 'eval at step' "$log" | tail -1)"
done
echo "wall time: $(( $(date +%s) - t0 )) s on $(python -c 'import jax; print(jax.devices()[0].device_kind)')"
