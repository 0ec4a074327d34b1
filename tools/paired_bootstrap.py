#!/usr/bin/env python3
"""Paired bootstrap of a caption metric: is system B's CIDEr (or BLEU-4, ...) really above A's?

    python3 tools/paired_bootstrap.py --store STORE A/captions.json B/captions.json \
        [--metric CIDEr] [--resamples 50] [--bin target/release/vlp-engine]

A and B are `eval --task caption` captions (id -> caption) over the same images. Each resample
draws the images with replacement (the same draw for both systems), scores both with
`vlp-engine score --task caption` (so document frequencies follow the resampled references, as
pycocoevalcap's would) and records B - A. Prints the full-set scores, the mean and standard
deviation of the difference and how many resamples have B above A.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile


def score(binary, refs, cands, metric):
    with tempfile.TemporaryDirectory() as d:
        r, c = os.path.join(d, "refs.json"), os.path.join(d, "cands.json")
        for path, obj in ((r, refs), (c, cands)):
            with open(path, "w") as f:
                json.dump(obj, f)
        out = subprocess.run([binary, "score", "--task", "caption", "--refs", r, "--cands", c], check=True, capture_output=True, text=True).stdout
        return json.loads(out)[metric]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--store", required=True)
    ap.add_argument("--metric", default="CIDEr")
    ap.add_argument("--resamples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bin", default="target/release/vlp-engine")
    args = ap.parse_args()
    a, b = json.load(open(args.a)), json.load(open(args.b))
    if set(a) != set(b):
        raise SystemExit(f"{args.a} and {args.b} caption different images ({len(a)} vs {len(b)} ids)")
    refs = {}
    with open(os.path.join(args.store, "captions.jsonl")) as f:
        for line in f:
            if line.strip():
                c = json.loads(line)
                if c["image_id"] in a:
                    refs.setdefault(c["image_id"], []).append(c["caption"])
    missing = set(a) - set(refs)
    if missing:
        raise SystemExit(f"{len(missing)} captioned ids have no references in {args.store}, e.g. {sorted(missing)[0]}")
    ids = sorted(a)
    full = (score(args.bin, refs, a, args.metric), score(args.bin, refs, b, args.metric))
    rng = random.Random(args.seed)
    diffs = []
    for _ in range(args.resamples):
        draw = [rng.choice(ids) for _ in ids]
        r = {f"{i}#{k}": refs[i] for k, i in enumerate(draw)}
        sa = score(args.bin, r, {f"{i}#{k}": a[i] for k, i in enumerate(draw)}, args.metric)
        sb = score(args.bin, r, {f"{i}#{k}": b[i] for k, i in enumerate(draw)}, args.metric)
        diffs.append(sb - sa)
    print(json.dumps({
        "images": len(ids),
        "metric": args.metric,
        "A": round(full[0], 4),
        "B": round(full[1], 4),
        "B_minus_A": round(full[1] - full[0], 4),
        "bootstrap_mean": round(statistics.mean(diffs), 4),
        "bootstrap_sd": round(statistics.stdev(diffs), 4),
        "B_above_A": f"{sum(d > 0 for d in diffs)}/{len(diffs)}",
    }))


if __name__ == "__main__":
    main()
