#!/usr/bin/env bash
# Regenerates weights/tiny-synth: the tiny config pre-trained on the default synthetic world
# (2000 images, seed 42, feature dim 2054), 1000 steps. Deterministic for a given adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/tiny-synth
rm -rf "$out"
cargo run --release -- train --steps 1000 --warmup 100 --eval-every 250 --save-every 250 --out "$out"
mkdir -p weights/tiny-synth
cp "$out"/model/config.json "$out"/model/model.safetensors "$out"/model/tokenizer.json weights/tiny-synth/
tail -n 1 "$out"/metrics.jsonl > weights/tiny-synth/final_metrics.json
echo "weights/tiny-synth updated"
