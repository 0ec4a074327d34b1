#!/usr/bin/env python3
"""How much CIDEr is there for SCST to find on the synthetic world, and does sampling find it?

    python3 tools/scst_headroom.py oracles --store runs/world8k --captions runs/caption/g800/captions.json
    python3 tools/scst_headroom.py samples --store runs/pretrain3k/data --model runs/caption/model \
        [--images 200] [--sample 10] [--temperature 1] [--top-k 0] [--greedy runs/caption/gval/captions.json]

`oracles` scores hand-built captions for the images of an `eval --task caption` captions file
(id -> caption), each made from what the captioner can see or from the scene's ground truth, next
to the captioner's own: e.g. its object word in the other template ("a small X is to the left of
a large Y.", Y another of the image's tags) or the named object's true size and colour.

`samples` draws captions per validation image with `vlp-engine caption --sample` and reports the
mean CIDEr-D of the samples of each template ("sits alone", "is <relation>", "there is", "and ...
in a scene with N objects") and its mean advantage over the image's sample mean (the signal of
SCST's sample baseline).

Every number comes from `vlp-engine score --task caption` (pycocoevalcap's CIDEr-D: document
frequencies from the evaluated references). A subset's mean is scored with the other candidates
replaced by "zzzz" (which scores 0, leaving the document frequencies alone) and rescaled; each
sample is its own id with its image's references, which scales every document frequency and the
image count alike, so the inverse document frequencies are the image set's.
"""
import argparse
import collections
import json
import os
import re
import subprocess

from paired_bootstrap import score

SYNONYMS = {"block": "cube", "ball": "sphere", "vehicle": "car", "mug": "cup", "puppy": "dog", "light": "lamp"}


def load_store(store, ids=None, split=None):
    images, refs = {}, collections.defaultdict(list)
    for line in open(os.path.join(store, "images.jsonl")):
        d = json.loads(line)
        if (ids is None or d["id"] in ids) and (split is None or d["split"] == split):
            images[d["id"]] = d
    for line in open(os.path.join(store, "captions.jsonl")):
        d = json.loads(line)
        if d["image_id"] in images:
            refs[d["image_id"]].append(d["caption"])
    return images, refs


def cider(binary, refs, cands):
    return score(binary, refs, cands, "CIDEr")


def subset_mean(binary, refs, cands, keep):
    """Mean CIDEr-D of the candidates with keep(id) true, document frequencies of all of refs."""
    n = sum(1 for i in cands if keep(i))
    if n == 0:
        return None, 0
    masked = {i: (c if keep(i) else "zzzz") for i, c in cands.items()}
    return cider(binary, refs, masked) * len(cands) / n, n


def art(w):
    return "an" if w[0] in "aeiou" else "a"


def oracles(a):
    caps = json.load(open(a.captions))
    images, refs = load_store(a.store, set(caps))
    refs = {i: refs[i] for i in caps}
    rows = {"the captioner's captions": dict(caps)}
    for i, c in caps.items():
        d = images[i]
        tags = d["tags"].split() or ["cube"]
        m = re.match(r"an? (small|large) (\w+) sits alone", c)
        o = m.group(2) if m else tags[0]
        other = next((t for t in tags if t != SYNONYMS.get(o, o)), o)
        n = len(d["objects"])
        named = [x for x in d["objects"] if x["class"] == SYNONYMS.get(o, o)]
        size, colour = (named[0]["size"], named[0]["color"]) if named else ("small", None)
        o1, o2 = d["objects"][0], d["objects"][1]
        seen = {
            "its object, sits alone (first tag instead)": f"a small {tags[0]} sits alone in the picture.",
            "its object and another tag, 'to the left of'": f"a small {o} is to the left of a large {other}.",
            "its object and another tag, 'and', N = 3": f"a small {o} and a small {other} in a scene with 3 objects.",
            "its object and another tag, 'and', true N": f"a small {o} and a small {other} in a scene with {n} objects.",
            "its object with its true size": f"{art(size)} {size} {o} sits alone in the picture." if m else c,
            "its object with its true size and colour": f"a {size} {colour} {o} sits alone in the picture." if m and colour else c,
            "ground truth: two objects, 'to the left of'": f"a {o1['size']} {o1['color']} {o1['class']} is to the left of a {o2['size']} {o2['color']} {o2['class']}.",
        }
        for k, v in seen.items():
            rows.setdefault(k, {})[i] = v
    print(f"{len(caps)} images of {a.store}; CIDEr-D (pycocoevalcap, vlp-engine score)")
    for k, v in rows.items():
        print(f"{cider(a.bin, refs, v):.3f}  {k}")


def template(c):
    if "sits alone" in c:
        return "sits alone"
    if c.startswith("there is"):
        return "there is"
    if " and " in c:
        return "and ... with N objects"
    return "is <relation>"


def samples(a):
    images, refs = load_store(a.store, split="val")
    ids = sorted(images)[: a.images]
    cmd = [a.bin, "caption", "--model", a.model, "--data", a.store, "--sample", str(a.sample), "--temperature", str(a.temperature), "--top-k", str(a.top_k)]
    for i in ids:
        cmd += ["--image", i]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    per = collections.defaultdict(list)
    for line in out.splitlines():
        i, c = line.split("\t", 1)
        per[i].append(c)
    missing = [i for i in ids if len(per[i]) != a.sample]
    if missing:
        raise SystemExit(f"vlp-engine caption returned {len(per)} images, not {a.sample} samples each (e.g. {missing[:3]})")
    srefs, scands = {}, {}
    for i in ids:
        for k, c in enumerate(per[i]):
            srefs[f"{i}#{k}"], scands[f"{i}#{k}"] = refs[i], c
    print(f"{len(ids)} val images x {a.sample} samples, temperature {a.temperature}, top-k {a.top_k}, model {a.model}")
    print(f"{cider(a.bin, srefs, scands):.3f}  all samples")
    if a.greedy:
        g = json.load(open(a.greedy))
        print(f"{cider(a.bin, {i: refs[i] for i in ids}, {i: g[i] for i in ids}):.3f}  greedy captions ({a.greedy})")
    for t in ["sits alone", "is <relation>", "there is", "and ... with N objects"]:
        mean, n = subset_mean(a.bin, srefs, scands, lambda s: template(scands[s]) == t)
        if n:
            print(f"{mean:.3f}  {t} ({n} samples)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oracles")
    o.add_argument("--store", required=True)
    o.add_argument("--captions", required=True)
    s = sub.add_parser("samples")
    s.add_argument("--store", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--images", type=int, default=200)
    s.add_argument("--sample", type=int, default=10)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--greedy")
    for p in (o, s):
        p.add_argument("--bin", default="target/release/vlp-engine")
    a = ap.parse_args()
    oracles(a) if a.cmd == "oracles" else samples(a)


if __name__ == "__main__":
    main()
