#!/usr/bin/env python3
"""Paired bootstrap of a caption metric: is system B's CIDEr (or BLEU-4, ...) really above A's?

    python3 tools/paired_bootstrap.py --store STORE A/captions.json B/captions.json \
        [--metric CIDEr] [--resamples 50] [--bin target/release/vlp-engine]

A and B are `eval --task caption` captions (id -> caption) over the same images. Each resample
draws the images with replacement (the same draw for both systems), scores both with
`vlp-engine score --task caption` (so document frequencies follow the resampled references, as
pycocoevalcap's would) and records B - A. Prints the full-set scores, the mean and standard
deviation of the difference and how many resamples have B above A. For CIDEr and ROUGE-L it also
compares the systems image by image (`vlp-engine score --per-image`, the whole set's document
frequencies): the mean per-image difference with its standard error, how many images B scores
higher and lower, and a two-sided sign test over those.
"""
import argparse
import json
import math
import os
import random
import statistics
import subprocess
import tempfile


def score(binary, refs, cands, metric, per_image=False):
    """`vlp-engine score --task caption`'s `metric`; with per_image, also {id: that image's metric}
    (`--per-image`, the whole set's document frequencies), from the same run."""
    with tempfile.TemporaryDirectory() as d:
        r, c, p = (os.path.join(d, f) for f in ("refs.json", "cands.json", "per_image.json"))
        for path, obj in ((r, refs), (c, cands)):
            with open(path, "w") as f:
                json.dump(obj, f)
        cmd = [binary, "score", "--task", "caption", "--refs", r, "--cands", c] + (["--per-image", p] if per_image else [])
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)[metric]
        if not per_image:
            return out
        return out, {i: v[metric] for i, v in json.load(open(p)).items()}


def sign_test(up, down):
    """Two-sided binomial sign test: how likely so lopsided a split of the changed images is if
    B and A were equally likely to win each."""
    n, k = up + down, max(up, down)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n)


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
    paired = {}
    if args.metric in ("CIDEr", "ROUGE-L"):
        # per image, with the whole set's document frequencies (`score --per-image`): the mean
        # difference and its standard error, and a sign test over the images whose score changed
        (fa, pa), (fb, pb) = score(args.bin, refs, a, args.metric, True), score(args.bin, refs, b, args.metric, True)
        full = (fa, fb)
        d = [pb[i] - pa[i] for i in ids]
        up, down = sum(x > 0 for x in d), sum(x < 0 for x in d)
        paired = {
            "per_image_mean_diff": round(statistics.mean(d), 4),
            "per_image_se": round(statistics.stdev(d) / math.sqrt(len(d)), 4),
            "images_B_better": up,
            "images_B_worse": down,
            "sign_test_p": float(f"{sign_test(up, down):.2g}"),
        }
    else:
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
        **({
            "bootstrap_mean": round(statistics.mean(diffs), 4),
            "bootstrap_sd": round(statistics.stdev(diffs), 4),
            "B_above_A": f"{sum(d > 0 for d in diffs)}/{len(diffs)}",
        } if len(diffs) > 1 else {}),
        **paired,
    }))


if __name__ == "__main__":
    main()
