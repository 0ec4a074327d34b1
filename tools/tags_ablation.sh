#!/usr/bin/env bash
# Oscar's central claim on the synthetic world: pre-train the same tiny model twice — with object tags
# and with an empty tag segment (--no-tags) — for the same steps, fine-tune both on GQA, VQA and
# retrieval with the same budget (the no-tags arm without tags throughout), evaluate on the test split,
# and print one markdown table with the difference.
#   PRE_STEPS=300 FT_STEPS=150 RET_IMAGES=20 bash tools/tags_ablation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/vlp-engine}
OUT=${OUT:-runs/tags-ablation}
PRE=${PRE_STEPS:-300}
FT=${FT_STEPS:-150}
RET_IMAGES=${RET_IMAGES:-20}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"
[ -f "$OUT/data/captions.jsonl" ] || "$BIN" synth --out "$OUT/data" >/dev/null
for arm in tags notags; do
  flag=""
  [ "$arm" = notags ] && flag="--no-tags"
  echo "== $arm: pre-training $PRE steps" >&2
  "$BIN" train --data "$OUT/data" --out "$OUT/$arm/pre" --steps "$PRE" $flag >/dev/null 2>"$OUT/$arm-pre.log"
  for task in gqa vqa retrieval; do
    echo "== $arm: $task, $FT steps" >&2
    "$BIN" train --task "$task" --init "$OUT/$arm/pre/model" --data "$OUT/data" --out "$OUT/$arm/$task" --steps "$FT" \
      --warmup 15 --head-dropout 0.1 --weight-decay 0.05 --eval-every 0 $flag >/dev/null 2>"$OUT/$arm-$task.log"
    extra=""
    [ "$task" = retrieval ] && extra="--images $RET_IMAGES"
    "$BIN" eval --task "$task" --model "$OUT/$arm/$task/model" --data "$OUT/data" --split test $extra $flag --out "$OUT/$arm/$task.json" >/dev/null 2>&1
  done
done
python3 - "$OUT" "$PRE" "$FT" <<'PY'
import json, sys
out, pre, ft = sys.argv[1:]
rows = [("GQA accuracy %", "gqa", "accuracy"), ("VQA accuracy %", "vqa", "accuracy"),
        ("retrieval i2t R@1", "retrieval", "i2t_R@1"), ("retrieval i2t R@5", "retrieval", "i2t_R@5"),
        ("retrieval t2i R@1", "retrieval", "t2i_R@1"), ("retrieval t2i R@5", "retrieval", "t2i_R@5")]
print(f"| synthetic world, tiny, pre-train {pre} steps, fine-tune {ft} steps | with tags | no tags | difference |")
print("|---|---|---|---|")
for name, task, key in rows:
    a = json.load(open(f"{out}/tags/{task}.json"))[key]
    b = json.load(open(f"{out}/notags/{task}.json"))[key]
    print(f"| {name} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
PY
