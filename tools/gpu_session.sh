#!/usr/bin/env bash
# Everything issue 5 measures on a GPU host, in one device call, side by side in one run: adapter
# info and the cooperative-matrix self-check, `vlp-engine bench` (f32 and f16, with profiles), the
# PyTorch baseline (fp32 / TF32 / bf16) at the same shapes, the criterion kernel benchmarks, and
# the unit tests that need the GPU's features (cooperative matrices). Results go to $OUT (or
# ./gpu-results).
#
# Here (no GPU needed): bash tools/gpu_pack.sh   (loader kit + the three binaries -> .gl/)
# On the host (device tool: carry .gl):
#   source .gl/env.sh; bash tools/gpu_session.sh [batch]
# A dry run of the mechanics on any machine: CONFIG=tiny STEPS=1 PY=/opt/torchenv/bin/python3 bash tools/gpu_session.sh 2
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
b=${1:-128}
steps=${STEPS:-10}
py=${PY:-python3}
bin=.gl/vlp-engine
shape="--config ${CONFIG:-base} --batch $b --text 70 --regions 50"
run() { echo "== $*" | tee -a "$out/log.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; }
run "$bin" info
run .gl/unit-tests coop f16 --nocapture
for p in f32 f16; do
  run "$bin" bench $shape --precision $p --steps $steps --profile
  "$bin" bench $shape --precision $p --steps $steps --json > "$out/bench_$p.json" 2>>"$out/log.txt"
done
for p in fp32 tf32 bf16; do
  run "$py" tools/torch_baseline.py $shape --precision $p --steps $steps
done
VLP_BENCH_BATCH=$b run .gl/kernels --bench ${KERNELS:-matmul}
run "$bin" bench $shape --mode infer --steps $steps
echo "results in $out"
