#!/usr/bin/env python3
"""An independent JAX implementation of Oscar classifier fine-tuning (BERT post-LN encoder over
[CLS] question|caption [SEP] tags [SEP] + regions, tanh pooler, dropout, Linear head; AdamW with
Oscar's warm-up + linear decay and clipping at 1.0), trained from scratch on a vlp-engine store, to
tell an engine bug from the model's and the data's own limits (issue 10): on the CPU it runs a tiny
model ~20x faster than vlp-engine on lavapipe, so budgets and hyper-parameters can be swept.

    python3 -m venv /tmp/jax && /tmp/jax/bin/pip install jax optax safetensors tokenizers numpy
    /tmp/jax/bin/python tools/jax_reference.py STORE --task gqa --steps 300 --batch 16 --lr 1e-3
    ... --loss bce --priorbias 1        # VQA's soft BCE, the head bias at the answers' log prior
    ... --task retrieval --batch 8      # 8 positives + 8 negatives per step, as `train --task retrieval`
    ... --task nlvr2 --batch 8          # 8 statements, 16 sequences per step, the pair MLP

Prints validation accuracy (GQA: per question type, by the question's first word) every
--eval_every steps. Not used by the engine or its tests."""
import argparse, json, time, math
import numpy as np
import jax, jax.numpy as jnp, optax
from safetensors.numpy import load_file
from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--task", default="gqa")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--warmup", type=int, default=15)
p.add_argument("--wd", type=float, default=0.01)
p.add_argument("--std", type=float, default=0.02)
p.add_argument("--drop", type=float, default=0.1)
p.add_argument("--hdrop", type=float, default=0.1)
p.add_argument("--H", type=int, default=64)
p.add_argument("--L", type=int, default=2)
p.add_argument("--A", type=int, default=2)
p.add_argument("--F", type=int, default=256)
p.add_argument("--text", type=int, default=16)
p.add_argument("--regions", type=int, default=6)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--pool", default="tanh")  # tanh | none
p.add_argument("--imgln", type=int, default=0)
p.add_argument("--notags", type=int, default=0)
p.add_argument("--noregions", type=int, default=0)
p.add_argument("--pairtags", type=int, default=0)  # nlvr2: each image's tags after the statement (Oscar's --use_label_seq)
p.add_argument("--eval_every", type=int, default=100)
p.add_argument("--readout", default="cls")
p.add_argument("--loss", default="ce")
p.add_argument("--priorbias", type=int, default=0)
a = p.parse_args()

tok = Tokenizer.from_file(f"{a.data}/tokenizer.json")
V = tok.get_vocab_size()
ids = lambda s: tok.encode(s, add_special_tokens=False).ids
CLS, SEP, PAD = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), tok.token_to_id("[PAD]")
images = [json.loads(l) for l in open(f"{a.data}/images.jsonl")]
idx = {im["id"]: i for i, im in enumerate(images)}
feats = load_file(f"{a.data}/features.safetensors")
FD = next(iter(feats.values())).shape[1]
tags = [[] if a.notags else ids(im["tags"]) for im in images]
split = [im["split"] for im in images]


def seq(qa, tb, img):
    t = a.text
    qa, tb = list(qa), list(tb)
    while len(qa) + len(tb) > t - 3:
        (qa if len(qa) > len(tb) else tb).pop()
    x = [CLS] + qa + [SEP]
    ty = [0] * len(x)
    x += tb + [SEP]
    ty += [1] * (len(tb) + 1)
    m = [1] * len(x) + [0] * (t - len(x))
    ty += [0] * (t - len(x))
    x += [PAD] * (t - len(x))
    f = feats[images[img]["id"]][: a.regions]
    r = np.zeros((a.regions, FD), np.float32)
    r[: len(f)] = f
    rm = [0 if a.noregions else 1] * len(f) + [0] * (a.regions - len(f))
    return x, ty, m + rm, r


if a.task == "gqa":
    recs = [json.loads(l) for l in open(f"{a.data}/vqa.jsonl")]
    answers = sorted({r["answer"] for r in recs if split[idx[r["image_id"]]] == "train"})
    ai = {x: i for i, x in enumerate(answers)}
    Q = [(idx[r["image_id"]], ids(r["question"]), ai.get(r["answer"], -1), r["question"]) for r in recs]
    pools = {s: [i for i, q in enumerate(Q) if split[q[0]] == s] for s in ("train", "val")}
    NC = len(answers)

    def make(picks):
        X = [seq(Q[i][1], tags[Q[i][0]], Q[i][0]) for i in picks]
        return X, np.array([Q[i][2] for i in picks])
elif a.task == "nlvr2":
    # two sequences per example, [CLS] statement [SEP] + one image's regions, no tags (Oscar's commands)
    recs = [json.loads(l) for l in open(f"{a.data}/nlvr2.jsonl")]
    S = [(idx[r["left"]], idx[r["right"]], ids(r["statement"]), int(r["label"]), r["statement"]) for r in recs]
    pools = {s: [i for i, x in enumerate(S) if split[x[0]] == s] for s in ("train", "val")}
    NC = 2

    def make(picks, rng=None):
        X = []
        for i in picks:
            l, r = S[i][0], S[i][1]
            X += [seq(S[i][2], tags[l] if a.pairtags else [], l), seq(S[i][2], tags[r] if a.pairtags else [], r)]
        return X, np.array([S[i][3] for i in picks])
else:
    caps = [json.loads(l) for l in open(f"{a.data}/captions.jsonl")]
    C = [(idx[c["image_id"]], ids(c["caption"])) for c in caps]
    byimg = {}
    for i, c in enumerate(C):
        byimg.setdefault(c[0], []).append(i)
    pools = {s: [i for i, c in enumerate(C) if split[c[0]] == s] for s in ("train", "val")}
    NC = 2

    def make(picks, rng):
        X, y = [], []
        for ci in picks:
            im, cap = C[ci]
            X.append(seq(cap, tags[im], im)); y.append(1)
        for ci in picks:
            im, cap = C[ci]
            o = (im + 1 + rng.integers(len(images) - 1)) % len(images)
            if rng.integers(2) == 0:
                X.append(seq(C[byimg[o][rng.integers(len(byimg[o]))]][1], tags[im], im))
            else:
                X.append(seq(cap, tags[o], o))
            y.append(0)
        return X, np.array(y)


def stack(X):
    return (np.array([x[0] for x in X], np.int32), np.array([x[1] for x in X], np.int32),
            np.array([x[2] for x in X], np.float32), np.array([x[3] for x in X], np.float32))


H, F, L, A = a.H, a.F, a.L, a.A
key = jax.random.PRNGKey(a.seed)


def init():
    k = iter(jax.random.split(key, 100))
    n = lambda *s: a.std * jax.random.normal(next(k), s)
    P = {"word": n(V, H), "pos": n(512, H), "type": n(2, H), "eln_g": jnp.ones(H), "eln_b": jnp.zeros(H),
         "img_w": n(FD, H), "img_b": jnp.zeros(H), "iln_g": jnp.ones(H), "iln_b": jnp.zeros(H),
         "pool_w": n(H, H), "pool_b": jnp.zeros(H), "cls_w": n(H, NC), "cls_b": jnp.zeros(NC), "layers": []}
    if a.task == "nlvr2":  # the pair MLP: Linear(2H, 2H) -> ReLU -> Linear(2H, 2) (scale 2, no LayerNorm)
        P.update({"pair_w": n(2 * H, 2 * H), "pair_b": jnp.zeros(2 * H), "cls_w": n(2 * H, NC)})
    for _ in range(L):
        P["layers"].append({"qkv": n(H, 3 * H), "qkv_b": jnp.zeros(3 * H), "o": n(H, H), "o_b": jnp.zeros(H),
                            "ln1_g": jnp.ones(H), "ln1_b": jnp.zeros(H), "up": n(H, F), "up_b": jnp.zeros(F),
                            "down": n(F, H), "down_b": jnp.zeros(H), "ln2_g": jnp.ones(H), "ln2_b": jnp.zeros(H)})
    return P


def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + eps) * g + b


def drop(x, p, k, train):
    if not train or p == 0:
        return x
    keep = jax.random.bernoulli(k, 1 - p, x.shape)
    return jnp.where(keep, x / (1 - p), 0)


def forward(P, ids_, ty, m, img, k, train):
    ks = iter(jax.random.split(k, 64))
    B, T = ids_.shape
    t = P["word"][ids_] + P["pos"][jnp.arange(T)][None] + P["type"][ty]
    t = drop(ln(t, P["eln_g"], P["eln_b"]), a.drop, next(ks), train)
    r = img @ P["img_w"] + P["img_b"]
    if a.imgln:
        r = ln(r, P["iln_g"], P["iln_b"])
    r = drop(r, a.drop, next(ks), train)
    x = jnp.concatenate([t, r], 1)
    bias = (1.0 - m)[:, None, None, :] * -10000.0
    hd = H // A
    for lp in P["layers"]:
        qkv = x @ lp["qkv"] + lp["qkv_b"]
        q, kk, v = [qkv[..., i * H:(i + 1) * H].reshape(B, -1, A, hd).transpose(0, 2, 1, 3) for i in range(3)]
        s = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        pr = drop(jax.nn.softmax(s, -1), a.drop, next(ks), train)
        c = (pr @ v).transpose(0, 2, 1, 3).reshape(B, -1, H)
        x = ln(x + drop(c @ lp["o"] + lp["o_b"], a.drop, next(ks), train), lp["ln1_g"], lp["ln1_b"])
        f = jax.nn.gelu(x @ lp["up"] + lp["up_b"], approximate=False) @ lp["down"] + lp["down_b"]
        x = ln(x + drop(f, a.drop, next(ks), train), lp["ln2_g"], lp["ln2_b"])
    xc = x[:, 0]
    if a.readout == "mean":
        xc = (x * m[:, :, None]).sum(1) / m.sum(1)[:, None]
    pooled = xc @ P["pool_w"] + P["pool_b"]
    if a.pool == "tanh":
        pooled = jnp.tanh(pooled)
    pooled = drop(pooled, a.hdrop, next(ks), train)
    if a.task == "nlvr2":
        pooled = jax.nn.relu(pooled.reshape(B // 2, 2 * H) @ P["pair_w"] + P["pair_b"])
    return pooled @ P["cls_w"] + P["cls_b"], x[:, 0]


def loss_fn(P, batch, k):
    logits, _ = forward(P, *batch[:4], k, True)
    y = batch[4]
    if a.loss == "bce":
        t = jax.nn.one_hot(y, NC)
        l = jnp.maximum(logits, 0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits)))
        return l.sum() / y.shape[0]
    lp = jax.nn.log_softmax(logits)
    valid = (y >= 0)
    return -(jnp.take_along_axis(lp, jnp.maximum(y, 0)[:, None], 1)[:, 0] * valid).sum() / jnp.maximum(valid.sum(), 1)


P = init()
if a.priorbias and a.task == "gqa":
    cnt = np.bincount([Q[i][2] for i in pools["train"] if Q[i][2] >= 0], minlength=NC) + 1.0
    pr = cnt / cnt.sum()
    P["cls_b"] = jnp.array(np.log(pr / (1 - pr)) if a.loss == "bce" else np.log(pr), jnp.float32)
sched = optax.join_schedules([optax.linear_schedule(a.lr / a.warmup, a.lr, a.warmup - 1), optax.linear_schedule(a.lr, 0.0, a.steps - a.warmup + 1)], [a.warmup - 1]) if a.warmup > 0 else optax.linear_schedule(a.lr, 0, a.steps)
decay_mask = jax.tree_util.tree_map_with_path(lambda p, _: not any(s in jax.tree_util.keystr(p) for s in ["_b", "ln", "_g"]), P)
opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=a.wd, mask=decay_mask))
st = opt.init(P)


@jax.jit
def step(P, st, batch, k):
    l, g = jax.value_and_grad(loss_fn)(P, batch, k)
    u, st = opt.update(g, st, P)
    return optax.apply_updates(P, u), st, l


fwd = jax.jit(lambda P, b: forward(P, *b, jax.random.PRNGKey(0), False))
rng = np.random.default_rng(a.seed)


def evaluate(P):
    vp = pools["val"]
    if a.task == "nlvr2":
        ok, per = 0, {}
        for i in range(0, len(vp), 64):
            ch = vp[i:i + 64]
            X, y = make(ch)
            hit = np.asarray(fwd(P, stack(X))[0]).argmax(1) == y
            ok += int(hit.sum())
            for e, h in zip(ch, hit):  # per statement type, by its wording
                kind = "more" if S[e][4].find("more") >= 0 else "both"
                per.setdefault(kind, []).append(h)
        return 100 * ok / len(vp), {k: round(100 * float(np.mean(v)), 1) for k, v in per.items()}
    if a.task == "gqa":
        ok, n, per = 0, 0, {}
        for i in range(0, len(vp), 64):
            ch = vp[i:i + 64]
            X, y = make(ch)
            lg, _ = fwd(P, stack(X))
            pr = np.asarray(lg).argmax(1)
            for q, pp, yy in zip(ch, pr, y):
                kind = Q[q][3].split()[0]
                e = per.setdefault(kind, [0, 0])
                e[0] += int(pp == yy); e[1] += 1
                ok += int(pp == yy); n += 1
        return 100 * ok / n, {k: round(100 * v[0] / v[1], 1) for k, v in per.items()}
    else:
        r2 = np.random.default_rng(123)
        ok, n = 0, 0
        for i in range(8):
            X, y = make([vp[j] for j in r2.integers(0, len(vp), 32)], r2)
            lg, _ = fwd(P, stack(X))
            ok += int((np.asarray(lg).argmax(1) == y).sum()); n += len(y)
        return 100 * ok / n, {}


t0 = time.time()
losses = []
for s in range(1, a.steps + 1):
    picks = [pools["train"][i] for i in rng.integers(0, len(pools["train"]), a.batch)]
    X, y = make(picks) if a.task == "gqa" else make(picks, rng)
    b = stack(X) + (jnp.array(y),)
    P, st, l = step(P, st, b, jax.random.PRNGKey(s * 7 + a.seed))
    losses.append(float(l))
    if s % a.eval_every == 0 or s == a.steps:
        acc, per = evaluate(P)
        print(f"step {s} loss {np.mean(losses[-a.eval_every:]):.3f} val {acc:.1f} {per} ({time.time() - t0:.0f}s)", flush=True)
