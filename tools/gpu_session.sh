#!/usr/bin/env bash
# Everything issue 5 measures on a GPU host, in one device call, side by side in one run: adapter
# info and the cooperative-matrix self-check, `vlp-engine bench` (f32 and f16, with profiles), the
# PyTorch baseline (fp32 / TF32 / bf16) at the same shapes, the criterion kernel benchmarks, and
# the unit tests that need the GPU's features (cooperative matrices). Results go to $OUT (or
# ./gpu-results).
#
# Here (no GPU needed):
#   bash ../shared/gpu-host/prepare.sh                 # Vulkan loader kit -> .gl/
#   cargo build --release && cargo bench --no-run && cargo test --release --lib --no-run
#   cp target/release/vlp-engine .gl/ && cp "$(ls -t target/release/deps/kernels-* | grep -v '\.d$' | head -1)" .gl/kernels
#   cp "$(ls -t target/release/deps/vlp_engine-* | grep -v '\.d$' | head -1)" .gl/unit-tests
# On the host (device tool: carry .gl):
#   source .gl/env.sh; bash tools/gpu_session.sh [batch]
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
b=${1:-128}
bin=.gl/vlp-engine
shape="--config base --batch $b --text 70 --regions 50"
run() { echo "== $*" | tee -a "$out/log.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; }
run "$bin" info
run .gl/unit-tests coop f16 --nocapture
for p in f32 f16; do
  run "$bin" bench $shape --precision $p --steps 10 --profile
  "$bin" bench $shape --precision $p --steps 10 --json > "$out/bench_$p.json" 2>>"$out/log.txt"
done
for p in fp32 tf32 bf16; do
  run python3 tools/torch_baseline.py $shape --precision $p --steps 10
done
VLP_BENCH_BATCH=$b run .gl/kernels --bench matmul
run "$bin" bench --config base --batch $b --text 70 --regions 50 --mode infer --steps 10
echo "results in $out"
