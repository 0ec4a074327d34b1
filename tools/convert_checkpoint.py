#!/usr/bin/env python3
"""Convert an official Oscar / Oscar+ checkpoint directory (pytorch_model.bin + config.json
[+ vocab.txt]) into a vlp-engine model directory (model.safetensors + config.json [+ vocab.txt]).

    python3 tools/convert_checkpoint.py OSCAR_DIR OUT_DIR

Names are kept (bert.*, cls.*, classifier.*); a `module.` prefix from DataParallel is stripped;
the decoder weight tied to the word embeddings is dropped (vlp-engine ties it itself); everything
is stored as float32. Needs torch and safetensors.
"""
import json, os, shutil, sys
import torch
from safetensors.torch import save_file


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    sd = torch.load(os.path.join(src, "pytorch_model.bin"), map_location="cpu", weights_only=False)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        if k.endswith("position_ids"):
            continue
        out[k] = v.detach().to(torch.float32).contiguous()
    word = out.get("bert.embeddings.word_embeddings.weight")
    dec = out.get("cls.predictions.decoder.weight")
    if dec is not None and word is not None and torch.equal(dec, word):
        del out["cls.predictions.decoder.weight"]
    elif dec is not None:
        print("warning: cls.predictions.decoder.weight is not tied to the word embeddings; vlp-engine ties them", file=sys.stderr)
        del out["cls.predictions.decoder.weight"]
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"converted_from": os.path.abspath(src)})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.setdefault("img_feature_dim", 2054)
    cfg.setdefault("img_layer_norm_eps", 1e-12)
    if "bert.LayerNorm.weight" in out:
        cfg["use_img_layernorm"] = 1
    if "cls.seq_relationship.weight" in out:
        cfg["num_contrast_classes"] = out["cls.seq_relationship.weight"].shape[0]
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    for f in ["vocab.txt", "tokenizer.json"]:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    print(f"{dst}: {len(out)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
