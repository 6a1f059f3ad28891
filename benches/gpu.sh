#!/usr/bin/env bash
# The GPU benchmark in one command, on any machine with a GPU and a Vulkan driver: the wgpu test
# suite, the step and refresh benches, and a training-step comparison on the llama-60m preset
# (AdamW, GaLore, Fira, APOLLO-Mini: step time, host reads, device memory in use), written as one
# markdown table to gpu-results/results.md. With a Python that has torch and galore-torch on a
# CUDA device, galore-torch and torch AdamW are timed on the same shapes beside it.
#
#   cargo build --release --features vulkan --bins --benches   # build first (not timed)
#   benches/gpu.sh                  # the full run (under 8 minutes on a modern GPU)
#   benches/gpu.sh --quick          # tiny sizes: an end-to-end check, also on Mesa's llvmpipe
#
# Environment: FEATURES (default `vulkan`; `wgpu` for the WGSL route), OUT (default
# gpu-results), PYTHON (default python3), and CARGO_TARGET_DIR as for any cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    *) echo "usage: benches/gpu.sh [--quick]" >&2; exit 2 ;;
  esac
done
features="${FEATURES:-vulkan}"
out="${OUT:-gpu-results}"
python="${PYTHON:-python3}"
mkdir -p "$out"
export BURN_DEVICE=wgpu
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

if $quick; then
  profile=()            # the dev profile (dependencies optimized) builds fastest for a check
  preset=tiny steps=3 warmup=1 batch=(--batch-size 2 --seq-len 32)
  tests=(--test device_path)
  bench_time=()
else
  profile=(--release)
  preset=llama-60m steps=20 warmup=3 batch=()
  tests=()
  bench_time=(--warm-up-time 1 --measurement-time 3)
fi

section() { printf '\n== %s\n' "$1" >&2; }
started=$SECONDS
device_name="$(vulkaninfo --summary 2>/dev/null | sed -n 's/^ *deviceName *= *//p' | head -1 || true)"

section "tests on wgpu (${tests[*]:-every test})"
cargo test "${profile[@]}" --features "$features" "${tests[@]}" -- --test-threads=1 2>&1 \
  | grep -E '^test result|FAILED|panicked' >&2

section "training step: $preset"
cargo run "${profile[@]}" --features "$features" --bin device_step -- \
  --preset "$preset" --steps "$steps" --warmup "$warmup" "${batch[@]}" \
  --recipes adamw,galore,fira,apollo-mini --out "$out/train_step.md" >&2

bench() {
  local name="$1" filter="$2"
  section "bench $name"
  if $quick; then
    # The quick run checks that the bench runs (criterion's test mode: one case once, in the
    # dev profile), without timing it.
    cargo test --features "$features,internals" --bench "$name" -- "$filter" 2>&1 \
      | grep -E 'Success|Testing' | tail -3 >&2
  else
    cargo bench --features "$features,internals" --bench "$name" -- "${bench_time[@]}" 2>&1 \
      | grep -E '^[a-z_0-9/x -]+$|time:' | sed 's/^ *//' > "$out/$name.txt"
  fi
}
bench step "step/galore/1376x512"
if $quick; then
  export REFRESH_BENCH_QUICK=1   # one small shape: the full ones take minutes to set up on a CPU
  bench refresh "refresh_344x128_r32/dct_matmul"
else
  bench refresh ""
fi

peers=""
if "$python" -c 'import torch, galore_torch; assert torch.cuda.is_available()' 2>/dev/null; then
  section "galore-torch and torch AdamW on CUDA"
  peers="$("$python" benches/peers/gpu_peers.py $($quick && echo --quick))"
else
  peers="galore-torch not timed: no Python with torch, galore-torch and a CUDA device."
fi

{
  echo "# GPU benchmark"
  echo
  echo "Device: ${device_name:-unknown} (BURN_DEVICE=wgpu, features \`$features\`); $(date -u +%F)."
  echo "Run: \`benches/gpu.sh$($quick && echo ' --quick')\`, $((SECONDS - started)) s."
  echo
  echo "## Training step"
  echo
  cat "$out/train_step.md"
  for name in step refresh; do
    if [ -s "$out/$name.txt" ]; then
      echo
      echo "## \`cargo bench --bench $name\`"
      echo
      echo '```text'
      cat "$out/$name.txt"
      echo '```'
    fi
  done
  echo
  echo "## PyTorch on the same shapes"
  echo
  echo "$peers"
} > "$out/results.md"
section "written $out/results.md in $((SECONDS - started)) s"
cat "$out/results.md"
