#!/usr/bin/env python3
"""METEOR and SPICE of a caption results file, through pycocoevalcap (optional bridge).

    pip install pycocoevalcap       # needs java on PATH (Java 8+)
    python3 tools/caption_java_metrics.py --refs REFS.json --cands CANDS.json [--metrics meteor,spice]

`vlp-engine score --task caption` computes BLEU, ROUGE-L and CIDEr in Rust; METEOR and SPICE are
Java programs (METEOR 1.5, SPICE 1.0) that pycocoevalcap ships and runs, so this script hands them
the same files. REFS: a JSON object image id -> list of reference captions, or a COCO captions
annotations file ({"annotations": [{"image_id", "caption"}, ...]}); CANDS: a JSON object image id ->
caption, or a COCO results list ([{"image_id", "caption"}, ...]). The captions go through
pycocoevalcap's PTBTokenizer first, as in COCOEvalCap.evaluate.

Prints one JSON object: {"METEOR": x, "SPICE": y, "images": n}; a metric that could not run is null
and its reason is under "errors" (SPICE downloads Stanford CoreNLP models, ~1 GB, on first use and
fails offline; METEOR needs about 2 GB of Java heap). Exits 2 when pycocoevalcap or java is missing.
"""
import argparse, contextlib, json, shutil, sys


def die(msg):
    print(json.dumps({"error": msg}))
    sys.exit(2)


def ident(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
        raise SystemExit("%s: expected an integer or string image id, found %r" % (where, v))
    return str(v)


def read_refs(path):
    with open(path) as f:
        d = json.load(f)
    if not isinstance(d, dict):
        raise SystemExit("%s: not a JSON object" % path)
    out = {}
    if "annotations" in d:
        for i, a in enumerate(d["annotations"]):
            k = ident(a.get("image_id"), "%s: annotations[%d].image_id" % (path, i))
            c = a.get("caption")
            if not isinstance(c, str) or not c.strip():
                raise SystemExit("%s: annotations[%d] (image '%s'): no caption text" % (path, i, k))
            out.setdefault(k, []).append(c)
    else:
        for k, v in d.items():
            if not isinstance(v, list) or not v or not all(isinstance(c, str) and c.strip() for c in v):
                raise SystemExit("%s: image '%s': expected a non-empty list of caption strings" % (path, k))
            out[k] = v
    if not out:
        raise SystemExit("%s: no images" % path)
    return out


def read_cands(path):
    with open(path) as f:
        d = json.load(f)
    pairs = []
    if isinstance(d, list):
        for i, r in enumerate(d):
            k = ident(r.get("image_id") if isinstance(r, dict) else None, "%s: [%d].image_id" % (path, i))
            pairs.append((k, r.get("caption")))
    elif isinstance(d, dict):
        pairs = list(d.items())
    else:
        raise SystemExit("%s: not a JSON object or list" % path)
    out = {}
    for k, c in pairs:
        if not isinstance(c, str) or not c.strip():
            raise SystemExit("%s: image '%s': expected one non-empty caption string" % (path, k))
        if k in out:
            raise SystemExit("%s: image '%s' appears twice" % (path, k))
        out[k] = c
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", required=True)
    ap.add_argument("--cands", required=True)
    ap.add_argument("--metrics", default="meteor,spice", help="comma-separated: meteor, spice")
    a = ap.parse_args()
    wanted = [m.strip().lower() for m in a.metrics.split(",") if m.strip()]
    if any(m not in ("meteor", "spice") for m in wanted):
        raise SystemExit("--metrics: expected meteor and/or spice, got %r" % a.metrics)

    try:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        die("pycocoevalcap is not installed (pip install pycocoevalcap)")
    if shutil.which("java") is None:
        die("java is not on PATH (pycocoevalcap's tokenizer, METEOR and SPICE are Java programs)")

    refs, cands = read_refs(a.refs), read_cands(a.cands)
    unknown = sorted(set(cands) - set(refs))
    missing = [k for k in refs if k not in cands]
    if unknown:
        raise SystemExit("%s: unknown image id %s (not in %s)" % (a.cands, ", ".join(unknown[:5]), a.refs))
    if missing:
        raise SystemExit("%s: no caption for image id %s of %s" % (a.cands, ", ".join(missing[:5]), a.refs))
    tok = PTBTokenizer()
    with contextlib.redirect_stdout(sys.stderr):
        gts = tok.tokenize({k: [{"caption": c} for c in refs[k]] for k in refs})
        res = tok.tokenize({k: [{"caption": cands[k]}] for k in refs})

    out, errors = {"images": len(refs)}, {}
    for m in wanted:
        name = m.upper()
        try:
            # pycocoevalcap prints progress (SPICE's model download) to stdout: keep it for the JSON
            with contextlib.redirect_stdout(sys.stderr):
                if m == "meteor":
                    from pycocoevalcap.meteor.meteor import Meteor

                    scorer = Meteor()
                else:
                    from pycocoevalcap.spice.spice import Spice

                    scorer = Spice()
                score, _ = scorer.compute_score(gts, res)
            out[name] = float(score)
        except BaseException as e:  # SystemExit / subprocess errors from the Java side too
            if isinstance(e, KeyboardInterrupt):
                raise
            out[name] = None
            hint = " (SPICE fetches Stanford CoreNLP models on first use; offline it cannot)" if m == "spice" else ""
            errors[name] = "%s: %s%s" % (type(e).__name__, str(e).strip()[:500] or "failed", hint)
    if errors:
        out["errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main()
