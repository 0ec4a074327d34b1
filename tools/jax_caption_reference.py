#!/usr/bin/env python3
"""An independent JAX implementation of Oscar caption fine-tuning (issue 11): the caption layout
([CLS] caption [SEP] padded to --cap, the tags and [SEP] up to --text, the regions), the seq2seq
mask (causal caption; tags and regions never see it), 1-3 masked caption tokens (80/10/10), the
masked-token head tied to the word embeddings; AdamW with warm-up and linear decay, clipping at 1.
Trained from scratch on a vlp-engine store, it prints validation masked-token accuracy overall and
on the masked words that are one of the image's tags ("tag-word acc": the object words a captioner
can copy from the tags; chance about 1 / classes). ~30x faster than the engine on lavapipe, so
budgets can be swept (docs/finetuning-log.md §6). Not used by the engine or its tests.

    python3 -m venv /tmp/jax && /tmp/jax/bin/pip install jax optax safetensors tokenizers numpy
    vlp-engine synth --out world38 --feature-dim 38
    /tmp/jax/bin/python tools/jax_caption_reference.py world38 --steps 8000 --std 0.02
    ... --noun_only 1      # mask the tag words only (train and validation)
"""
import argparse, json, time, math
import numpy as np, jax, jax.numpy as jnp, optax
from safetensors.numpy import load_file
from tokenizers import Tokenizer
p = argparse.ArgumentParser()
p.add_argument("data"); p.add_argument("--steps", type=int, default=2000); p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--warmup", type=int, default=100); p.add_argument("--std", type=float, default=0.02)
p.add_argument("--drop", type=float, default=0.1); p.add_argument("--H", type=int, default=64); p.add_argument("--L", type=int, default=2)
p.add_argument("--A", type=int, default=2); p.add_argument("--cap", type=int, default=24); p.add_argument("--text", type=int, default=32)
p.add_argument("--regions", type=int, default=6); p.add_argument("--eval_every", type=int, default=250); p.add_argument("--seed", type=int, default=0)
p.add_argument("--notags", type=int, default=0); p.add_argument("--noun_only", type=int, default=0)
p.add_argument("--tag_words", type=float, default=0.0)  # training only, as train --mask-tag-words
a = p.parse_args()
tok = Tokenizer.from_file(f"{a.data}/tokenizer.json"); V = tok.get_vocab_size()
ids = lambda s: tok.encode(s, add_special_tokens=False).ids
CLS, SEP, PAD, MASK = [tok.token_to_id(t) for t in ["[CLS]", "[SEP]", "[PAD]", "[MASK]"]]
images = [json.loads(l) for l in open(f"{a.data}/images.jsonl")]; idx = {im["id"]: i for i, im in enumerate(images)}
feats = load_file(f"{a.data}/features.safetensors"); FD = next(iter(feats.values())).shape[1]
tags = [ids(im["tags"]) for im in images]; split = [im["split"] for im in images]
caps = [json.loads(l) for l in open(f"{a.data}/captions.jsonl")]
C = [(idx[c["image_id"]], ids(c["caption"])) for c in caps]
pools = {s: [i for i, c in enumerate(C) if split[c[0]] == s] for s in ("train", "val")}
T = a.text; G = a.cap; R = a.regions; NM = 3
def make(picks, rng, tag_words=0.0):
    X, TY, POS, M3, IMG, MP, ML, ISTAG = [], [], [], [], [], [], [], []
    for ci in picks:
        im, cap = C[ci]
        cap = cap[:G - 2]
        x = [CLS] + cap + [SEP]; nc = len(x)
        tb = [] if a.notags else tags[im][:T - G - 1]
        seq = x + [PAD] * (G - nc) + tb + [SEP]; nt = len(seq)
        seq += [PAD] * (T - nt)
        ty = [0] * G + [1] * (T - G)
        pos = list(range(T))
        f = feats[images[im]["id"]][:R]; r = np.zeros((R, FD), np.float32); r[:len(f)] = f
        valid = np.zeros(T + R, np.float32); valid[:nc] = 1; valid[G:nt] = 1; valid[T:T + len(f)] = 1
        m = np.zeros((T + R, T + R), np.float32)
        for i in range(T + R):
            if not valid[i]: continue
            if i < G:
                m[i, :i + 1] = valid[:i + 1]; m[i, G:] = valid[G:]
            else:
                m[i, G:] = valid[G:]
        cand = list(range(1, nc))
        k = min(len(cand), 1 + rng.integers(3))
        first = [j for j in cand if seq[j] in tb]
        if a.noun_only:
            cand = first or cand
        if tag_words > 0 and rng.random() < tag_words and first:
            rest = [j for j in cand if j not in first]
            chosen = list(rng.permutation(first))[:k] + list(rng.permutation(rest))[:max(0, k - len(first))]
        else:
            chosen = rng.choice(cand, k, replace=False)
        mp, ml, it = [], [], []
        for j in chosen:
            ml.append(seq[j]); mp.append(j); it.append(int(seq[j] in tags[im]))
            u = rng.random()
            if u < 0.8: seq[j] = MASK
            elif u < 0.9: seq[j] = int(rng.integers(V))
        while len(mp) < NM: mp.append(0); ml.append(-1); it.append(0)
        X.append(seq); TY.append(ty); POS.append(pos); M3.append(m); IMG.append(r); MP.append(mp); ML.append(ml); ISTAG.append(it)
    f = lambda v, t: np.array(v, t)
    return f(X, np.int32), f(TY, np.int32), f(POS, np.int32), f(M3, np.float32), f(IMG, np.float32), f(MP, np.int32), f(ML, np.int32), f(ISTAG, np.int32)
H, F, L, A = a.H, 4 * a.H, a.L, a.A
key = jax.random.PRNGKey(a.seed)
def init():
    k = iter(jax.random.split(key, 100)); n = lambda *s: a.std * jax.random.normal(next(k), s)
    P = {"word": n(V, H), "pos": n(512, H), "type": n(2, H), "eln_g": jnp.ones(H), "eln_b": jnp.zeros(H), "img_w": n(FD, H), "img_b": jnp.zeros(H),
         "tr_w": n(H, H), "tr_b": jnp.zeros(H), "tln_g": jnp.ones(H), "tln_b": jnp.zeros(H), "dec_b": jnp.zeros(V), "layers": []}
    for _ in range(L):
        P["layers"].append({"qkv": n(H, 3 * H), "qkv_b": jnp.zeros(3 * H), "o": n(H, H), "o_b": jnp.zeros(H), "ln1_g": jnp.ones(H), "ln1_b": jnp.zeros(H),
                            "up": n(H, F), "up_b": jnp.zeros(F), "down": n(F, H), "down_b": jnp.zeros(H), "ln2_g": jnp.ones(H), "ln2_b": jnp.zeros(H)})
    return P
def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True); return (x - m) / jnp.sqrt(v + eps) * g + b
def drop(x, p_, k, train):
    if not train or p_ == 0: return x
    return jnp.where(jax.random.bernoulli(k, 1 - p_, x.shape), x / (1 - p_), 0)
def forward(P, X, TY, POS, M3, IMG, MP, k, train):
    ks = iter(jax.random.split(k, 64)); B = X.shape[0]
    t = P["word"][X] + P["pos"][POS] + P["type"][TY]
    t = drop(ln(t, P["eln_g"], P["eln_b"]), a.drop, next(ks), train)
    r = drop(IMG @ P["img_w"] + P["img_b"], a.drop, next(ks), train)
    x = jnp.concatenate([t, r], 1); bias = (1.0 - M3)[:, None] * -10000.0; hd = H // A
    for lp in P["layers"]:
        qkv = x @ lp["qkv"] + lp["qkv_b"]
        q, kk, v = [qkv[..., i * H:(i + 1) * H].reshape(B, -1, A, hd).transpose(0, 2, 1, 3) for i in range(3)]
        s = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        pr = drop(jax.nn.softmax(s, -1), a.drop, next(ks), train)
        c = (pr @ v).transpose(0, 2, 1, 3).reshape(B, -1, H)
        x = ln(x + drop(c @ lp["o"] + lp["o_b"], a.drop, next(ks), train), lp["ln1_g"], lp["ln1_b"])
        f = jax.nn.gelu(x @ lp["up"] + lp["up_b"], approximate=False) @ lp["down"] + lp["down_b"]
        x = ln(x + drop(f, a.drop, next(ks), train), lp["ln2_g"], lp["ln2_b"])
    h = jnp.take_along_axis(x, MP[:, :, None], 1)
    h = ln(jax.nn.gelu(h @ P["tr_w"] + P["tr_b"], approximate=False), P["tln_g"], P["tln_b"])
    return h @ P["word"].T + P["dec_b"]
def loss_fn(P, b, k):
    lg = forward(P, *b[:6], k, True); y = b[6]; valid = y >= 0
    lp = jax.nn.log_softmax(lg)
    return -(jnp.take_along_axis(lp, jnp.maximum(y, 0)[..., None], -1)[..., 0] * valid).sum() / jnp.maximum(valid.sum(), 1)
P = init()
sched = optax.join_schedules([optax.linear_schedule(a.lr / a.warmup, a.lr, a.warmup - 1), optax.linear_schedule(a.lr, 0.0, a.steps - a.warmup + 1)], [a.warmup - 1])
opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01)); st = opt.init(P)
@jax.jit
def step(P, st, b, k):
    l, g = jax.value_and_grad(loss_fn)(P, b, k); u, st = opt.update(g, st, P); return optax.apply_updates(P, u), st, l
fwd = jax.jit(lambda P, b: forward(P, *b[:6], jax.random.PRNGKey(0), False))
rng = np.random.default_rng(a.seed); t0 = time.time(); losses = []
def evaluate(P):
    r2 = np.random.default_rng(5); ok = n = okt = nt = 0
    for i in range(10):
        b = make([pools["val"][j] for j in r2.integers(0, len(pools["val"]), 64)], r2)
        pr = np.asarray(fwd(P, b)).argmax(-1); y = b[6]; it = b[7]
        v = y >= 0; ok += int(((pr == y) & v).sum()); n += int(v.sum())
        vt = v & (it == 1); okt += int(((pr == y) & vt).sum()); nt += int(vt.sum())
    return ok / n, okt / max(nt, 1), nt
for s in range(1, a.steps + 1):
    b = make([pools["train"][i] for i in rng.integers(0, len(pools["train"]), a.batch)], rng, a.tag_words)
    P, st, l = step(P, st, b, jax.random.PRNGKey(s * 7 + a.seed)); losses.append(float(l))
    if s % a.eval_every == 0 or s == a.steps:
        acc, tacc, nt = evaluate(P)
        print(f"step {s} loss {np.mean(losses[-a.eval_every:]):.3f} val acc {acc:.3f} tag-word acc {tacc:.3f} (n {nt}) ({time.time()-t0:.0f}s)", flush=True)
