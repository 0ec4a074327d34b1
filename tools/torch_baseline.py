#!/usr/bin/env python3
"""PyTorch baseline for `vlp-engine bench`: the same Oscar pre-training step (forward, masked-token +
contrastive losses with logits only at the masked positions, backward, AdamW) at the same shapes,
timed the same way (steady state after warm-up), with the same analytic FLOP count.

    python3 tools/torch_baseline.py --config base --batch 128 --text 70 --regions 50 --precision fp32
    python3 tools/torch_baseline.py ... --precision tf32 | bf16 [--mode infer] [--json]

fp32 = TF32 off; tf32 = TF32 matmuls; bf16 = torch.autocast(bfloat16) with fp32 master weights.
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def config(name):
    c = dict(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, img_feature_dim=2054, num_contrast_classes=2)
    if name in PRESETS:
        c.update(PRESETS[name])
    else:
        c.update(json.load(open(name)))
    return c


def forward_flops(c, text, regions, masked):
    """Must equal vlp_engine::train::bench::forward_flops (matmul FLOPs of one sequence)."""
    h, f, v, s = c["hidden_size"], c["intermediate_size"], c["vocab_size"], text + regions
    layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * f
    return (2 * regions * c["img_feature_dim"] * h + c["num_hidden_layers"] * layer + 2 * h * h
            + 2 * h * c["num_contrast_classes"] + masked * (2 * h * h + 2 * h * v))


class Layer(nn.Module):
    def __init__(s, c):
        super().__init__()
        h = c["hidden_size"]
        s.a, s.q, s.k, s.v, s.o = c["num_attention_heads"], nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        s.ln1, s.ln2 = nn.LayerNorm(h, eps=c["layer_norm_eps"]), nn.LayerNorm(h, eps=c["layer_norm_eps"])
        s.up, s.down = nn.Linear(h, c["intermediate_size"]), nn.Linear(c["intermediate_size"], h)
        s.pd, s.pa = c["hidden_dropout_prob"], c["attention_probs_dropout_prob"]

    def forward(s, x, ext):
        B, S, H = x.shape
        d = H // s.a
        heads = lambda t: t.view(B, S, s.a, d).transpose(1, 2)
        q, k, v = heads(s.q(x)), heads(s.k(x)), heads(s.v(x))
        p = F.dropout(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + ext, -1), s.pa, s.training)
        ctx = (p @ v).transpose(1, 2).reshape(B, S, H)
        a = s.ln1(F.dropout(s.o(ctx), s.pd, s.training) + x)
        return s.ln2(F.dropout(s.down(F.gelu(s.up(a))), s.pd, s.training) + a)


class Oscar(nn.Module):
    def __init__(s, c):
        super().__init__()
        h, V = c["hidden_size"], c["vocab_size"]
        s.word, s.pos, s.typ = nn.Embedding(V, h), nn.Embedding(c["max_position_embeddings"], h), nn.Embedding(c["type_vocab_size"], h)
        s.eln, s.img = nn.LayerNorm(h, eps=c["layer_norm_eps"]), nn.Linear(c["img_feature_dim"], h)
        s.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        s.pool, s.cls = nn.Linear(h, h), nn.Linear(h, c["num_contrast_classes"])
        s.tr, s.tln, s.bias = nn.Linear(h, h), nn.LayerNorm(h, eps=c["layer_norm_eps"]), nn.Parameter(torch.zeros(V))
        s.pd = c["hidden_dropout_prob"]

    def forward(s, ids, types, pos, img, mask, mlm_pos, mlm_labels, con_labels):
        e = F.dropout(s.eln(s.word(ids) + s.pos(pos) + s.typ(types)), s.pd, s.training)
        x = torch.cat([e, F.dropout(s.img(img), s.pd, s.training)], 1)
        ext = (1.0 - mask[:, None, None, :]) * -10000.0
        for l in s.layers:
            x = l(x, ext)
        con = F.cross_entropy(s.cls(torch.tanh(s.pool(x[:, 0]))), con_labels)
        t = s.tln(F.gelu(s.tr(x.reshape(-1, x.shape[-1])[mlm_pos])))
        mlm = F.cross_entropy(t @ s.word.weight.T + s.bias, mlm_labels, ignore_index=-1)
        return mlm + con


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="base")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--text", type=int, default=70)
    ap.add_argument("--regions", type=int, default=50)
    ap.add_argument("--mode", default="train", choices=["train", "infer"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    c = config(a.config)
    B, T, R, V = a.batch, a.text, a.regions, c["vocab_size"]
    # as vlp-engine bench (Rust's f64::round: halves away from zero; Python's round() would give
    # 10 instead of 11 at the standard text length 70)
    masked = max(1, math.floor(0.15 * T + 0.5))
    torch.manual_seed(0)
    model = Oscar(c).to(dev).train(a.mode == "train")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    g = lambda *s, hi: torch.randint(0, hi, s, device=dev)
    ids, types = g(B, T, hi=V), torch.zeros(B, T, dtype=torch.long, device=dev)
    types[:, T // 2:] = 1
    pos = torch.arange(T, device=dev).repeat(B, 1)
    img = torch.randn(B, R, c["img_feature_dim"], device=dev)
    mask = torch.ones(B, T + R, device=dev)
    mlm_pos = torch.tensor([b * (T + R) + 1 + k * (T - 1) // masked for b in range(B) for k in range(masked)], device=dev)
    mlm_labels, con_labels = g(B * masked, hi=V), g(B, hi=c["num_contrast_classes"])
    args = (ids, types, pos, img, mask, mlm_pos, mlm_labels, con_labels)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            if a.mode == "infer":
                with torch.no_grad():
                    return model(*args)
            loss = model(*args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    ms = 1e3 * (time.perf_counter() - t) / a.steps
    fl = forward_flops(c, T, R, masked) * B * (3 if a.mode == "train" else 1)
    r = dict(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__, config=a.config, mode=a.mode,
             precision=a.precision, batch=B, text=T, regions=R, masked_per_seq=masked, ms_per_step=ms, seq_per_s=B * 1e3 / ms,
             model_flops_per_step=fl, tflops=fl / (ms * 1e-3) / 1e12,
             peak_memory_mib=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"device: {r['device']} (torch {r['torch']}), {a.precision}")
        print(f"Oscar {a.config} {a.mode} step, batch {B} x (text {T} + regions {R}), {masked} masked tokens per sequence")
        print(f"  {ms:.2f} ms/step, {r['seq_per_s']:.1f} sequences/s, {r['tflops']:.3f} TFLOP/s (model FLOPs {fl:.3e}/step)")
        if r["peak_memory_mib"] is not None:
            print(f"  peak GPU memory {r['peak_memory_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
