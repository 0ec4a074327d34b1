#!/usr/bin/env python3
"""Reference numbers for vlp-engine's caption metrics (src/eval/caption), from pycocoevalcap itself.

    pip install pycocoevalcap          # 1.2; needs java on PATH for the PTB tokenizer
    python3 tools/caption_refs.py [DIR]    # DIR defaults to tests/fixtures/caption

For every test set DIR/<name>_refs.json (image id -> reference captions) + DIR/<name>_cands.json
(image id -> candidate caption) it writes DIR/<name>_expected.json: pycocoevalcap's Bleu(4),
Rouge() and Cider() after its PTBTokenizer, exactly as COCOEvalCap.evaluate runs them (references
and candidates tokenised separately, images in the refs file's order), plus the per-image ROUGE-L
and CIDEr and the tokenised captions.

It also writes DIR/ptb_expected.json: the Java PTB tokenizer's output (through pycocoevalcap's
wrapper) for the hand-picked tricky strings in PTB_STRINGS below and for FUZZ_COUNT random strings
made of caption-like fragments (seeded, so reruns give the same file). Every string is one caption
of its own image, all in one tokenizer run, in list order, as the Rust test replays them.

    python3 tools/caption_refs.py --fuzz N [--seed S] OUT.json

writes N random strings (half fragment-based, half random characters from an alphabet of the
characters the tokenizer's rules treat specially) with the Java tokenizer's output, for a larger
check than the committed one: `CAPTION_PTB_FILE=OUT.json cargo test --lib eval::caption -- --ignored`.
"""
import json, os, random, sys

try:
    import pycocoevalcap
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.cider.cider import Cider
except ImportError:
    sys.exit("caption_refs.py: pycocoevalcap is not installed (pip install pycocoevalcap)")

try:
    from importlib.metadata import version
    PYCOCOEVALCAP = version("pycocoevalcap")
except Exception:
    PYCOCOEVALCAP = "unknown"

PTB_STRINGS = [
    # case, sentence punctuation
    "A man riding a wave on top of a surfboard.", "A CAT, A DOG; AND A BIRD: ALL HERE!", "Is it a dog? Yes! Wow?! Ok...",
    "Hello . . . world", "Wait.... what", "End with two periods..", "comma,separated,words", "semi;colon:colon",
    # contractions and assimilations
    "I can't, won't, don't, shouldn't, isn't, ain't", "CAN'T WON'T DON'T", "Can't Won't", "cannot Cannot CANNOT",
    "gonna gotta lemme gimme wanna", "I'm you're he's she'd we'll they've it's", "it's 'tis 'twas", "y'all y'know",
    "don\u2019t can\u2019t it\u2019s man\u2019s", "it`s don`t", "n't", "'s", "the 's", "isn't.", "it's.", "they'rea",
    # possessives and quotes
    "the man's hat", "the dogs' bowls", "James' car", "the boss's desk", "MAN'S BEST FRIEND",
    "a \"quoted\" word", "\"start of line", "end of line\"", "'single quoted'", "`backtick' quotes''", "``latex''",
    "\u201ccurly double\u201d \u2018curly single\u2019", "\u00abguillemets\u00bb \u201elow\u201c", "it's 'a' test",
    "rock 'n' roll", "o'clock O'Neill d'Artagnan l'amour", "the '90s and '60s", "'til 'cause 'em",
    # brackets
    "a toy (a teddy bear) here", "[red] {blue} <green>", "(nested (parens))", "f(x)", "-LRB- literal -RRB-",
    # hyphens and dashes
    "black-and-white photo", "a t-shirt and a T-Shirt", "well-known, state-of-the-art", "a - b -- c --- d ---- e ----- f",
    "a 3-year-old child", "x-ray", "pre- and post-war", "anti-war pro-choice", "anti- pro-", "a\u2013b a \u2014 b", "e-mail",
    "snake_case words", "under__score", "non-U.S. firms", "well-",
    # numbers
    "3:30 p.m. or 10:45am", "$1,000.50 and 3.5% and 1,000,000", "-5 degrees +3 points", "2 1/2 years, 3/4 cup, 9 3/4",
    "\u00bd \u00bc \u00be \u2153 \u2154 \u2155", "12/25/2015 and 1-2-2003", "(555) 555-1234 and 555-123-4567", "10 250 1000",
    "route 66", "No. 1 and no. 5", "fig. 3 and ca. 1900", "3.14159", "1.5-inch", "1,000-year-old", "4x4 2x", "100s of",
    # currency and symbols
    "\u00a35 \u20ac3 \u00a250 \u00a5100 US$5 us$5 A$3", "50% + 20% = 70%", "AT&T and R&D and a&b", "A & B", "AT&amp;T",
    "email me@example.com now", "visit www.example.com or http://x.org/a?b=c.", "google.com Google.com", "#hashtag @user",
    "c++ and c# and f#", "a * b ** c", "a/b and/or w/o", "a \\ b", "3 \u00d7 4", "90\u00b0 angle", "\u00a9 2015 \u00ae \u2122",
    "~tilde^caret|pipe", ":) :-( ;) =D", "x_x ^_^ (^_^) (x-x)", "<b>bold</b> <br/>", "a < b > c << d >> e",
    # abbreviations and acronyms
    "Mr. Smith and Dr. Jones", "St. Louis and main st. here", "U.S. Army", "the U.S.", "the U.S. The end", "U.S.A.",
    "a.m. p.m. e.g. i.e.", "etc. and so on", "etc. The next", "Inc. Corp. Ltd. Co. Jan. Feb.", "vs. Mt. Everest",
    "I. A. Richards", "A. The", "the letter a.", "vitamin C.", "Washington D.C. and N.Y.", "Ph.D. and M.D.",
    "Co. Ltd", "pty. ltd", "Ark. Ill. Ala.", "ark. ill.", "Miss. and miss.", "the Mo. river",
    # other scripts and odd characters
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "Stra\u00dfe \u00c9COLE", "\u0130stanbul", "\u00f1and\u00fa", "\u4e00\u4e2a\u7537\u4eba",
    "emoji \U0001f600 here", "soft\u00adhyphen", "zero\u200bwidth", "non\u00a0breaking space", "tab\there",
    "\u00ffa\u0345b x\u0363-y", "XII \u216b and \u3007 zero", "a-\u0301b e\u0301t\u00e9", "\u039f\u0394\u039f\u03a3 street", "\u041c\u043e\u0441\u043a\u0432\u0430-city",
    "caf&eacute; &amp; &quot;q&quot; &lt;x&gt; &nbsp;", "\u2026 ellipsis char", "a\u00b7b", "\u00bfqu\u00e9? \u00a1s\u00ed!",
    # whitespace and empties
    "   leading and trailing   ", "", "   ", "...", "!!!", "- -", "'", "\"", "a", "A.", "I", "x .",
    # repeated words and long
    "a a a a a a", "the the the", "A very long caption " + "with many many words " * 8 + "at the end.",
]

# fragments for random strings: caption words, punctuation and the characters the rules care about
FRAGMENTS = (
    "a A the man dog dogs cat's man's it's don't can't won't cannot gonna I'm they're we'll "
    "black-and-white t-shirt 3-year-old x-ray U.S. U.S a.m. p.m. Mr. Dr. St. etc. No. no. fig. ca. Inc. "
    "3 12 3:30 1,000 2.5 1/2 10 250 1000 555-1234 $ $5 US$ % & + # @ * / \\ = ~ ^ | "
    ". .. ... .... , ; : ! ? ?! - -- --- _ ' '' \" ` `` ( ) [ ] { } < > << >> "
    "\u2019 \u2018 \u201c \u201d \u2013 \u2014 \u2026 \u00bd \u00a3 \u20ac \u00e9 \u00b0 "
    "o'clock rock 'n' '90s y'all O'Neill www.x.com a@b.com http://x.org :) ;-) x_x ^_^ <b> </b> "
    "&amp; &quot; &apos; n't 's 're 'll"
).split(" ")
JOINERS = [" ", " ", " ", " ", "", "  ", "\t"]
FUZZ_COUNT = 1500


def fuzz_strings(n, seed=20260101):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 9)
        s = ""
        for i in range(k):
            s += rng.choice(FRAGMENTS)
            if i + 1 < k:
                s += rng.choice(JOINERS)
        if rng.random() < 0.3:
            s = s.capitalize() if rng.random() < 0.5 else s.upper()
        out.append(s)
    return out


ALPHABET = (
    "abcdeilmnostxyzABCDEILMNOSTXYZ0123456789      .,;:!?'\"`-_()[]{}<>/\\@#$%&*+=~^|"
    "\u2019\u2018\u201c\u201d\u2013\u2014\u2026\u00bd\u00a3\u20ac\u00e9\u00b0\u00d7\u00b7\u00bf\u00a1\u00a0\u00ad"
)


def char_strings(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def tokenize_each(strings):
    """Each string as the only caption of its own image, in order, in one tokenizer run."""
    caps = {i: [{"caption": s}] for i, s in enumerate(strings)}
    tok = PTBTokenizer().tokenize(caps)
    return [tok[i][0] for i in range(len(strings))]


def score_set(refs, cands):
    ids = list(refs)
    if set(ids) != set(cands):
        raise SystemExit("refs and cands cover different images")
    gts = {i: [{"caption": c} for c in refs[i]] for i in ids}
    res = {i: [{"caption": cands[i]}] for i in ids}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    out = {"pycocoevalcap": PYCOCOEVALCAP}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out["BLEU-%d" % (k + 1)] = float(b[k])
    r, r_per = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = float(r)
    c, c_per = Cider().compute_score(gts, res)
    out["CIDEr"] = float(c)
    out["images"] = len(ids)
    out["per_image"] = {i: {"ROUGE-L": float(x), "CIDEr": float(y)} for i, x, y in zip(ids, r_per, c_per)}
    # the same numbers as shortest round-trip strings: a JSON number reader may round the last bit
    out["exact"] = {k: repr(out[k]) for k in ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]}
    out["exact"]["per_image"] = {i: {m: repr(v) for m, v in d.items()} for i, d in out["per_image"].items()}
    out["tokenized"] = {"refs": gts, "cands": {i: res[i][0] for i in ids}}
    return out


def main(d):
    names = sorted(f[: -len("_refs.json")] for f in os.listdir(d) if f.endswith("_refs.json") and not f.startswith("coco_"))
    for name in names:
        refs = json.load(open(os.path.join(d, name + "_refs.json")))
        cands = json.load(open(os.path.join(d, name + "_cands.json")))
        out = score_set(refs, cands)
        with open(os.path.join(d, name + "_expected.json"), "w") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(name, {k: round(v, 4) for k, v in out.items() if k.startswith(("BLEU", "ROUGE", "CIDEr"))})
    fuzz = fuzz_strings(FUZZ_COUNT)
    ptb = {
        "pycocoevalcap": PYCOCOEVALCAP,
        "tricky": [[s, t] for s, t in zip(PTB_STRINGS, tokenize_each(PTB_STRINGS))],
        "fuzz": [[s, t] for s, t in zip(fuzz, tokenize_each(fuzz))],
    }
    with open(os.path.join(d, "ptb_expected.json"), "w") as f:
        json.dump(ptb, f, indent=0, ensure_ascii=False)
        f.write("\n")
    print("ptb_expected.json: %d tricky + %d random strings" % (len(PTB_STRINGS), len(fuzz)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--fuzz":
        args = sys.argv[2:]
        seed = 1
        if "--seed" in args:
            k = args.index("--seed")
            seed = int(args[k + 1])
            del args[k : k + 2]
        n, out = int(args[0]), args[1]
        strings = fuzz_strings(n - n // 2, seed) + char_strings(n // 2, seed)
        with open(out, "w") as f:
            json.dump({"pycocoevalcap": PYCOCOEVALCAP, "fuzz": [[s, t] for s, t in zip(strings, tokenize_each(strings))]}, f, ensure_ascii=False)
        print("%s: %d strings" % (out, n))
        sys.exit(0)
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "caption"))
