#!/usr/bin/env python3
"""Reference captions for src/decoding, written by Oscar's own search code.

Runs microsoft/Oscar's search code unchanged: `_generate_no_beam_search` (greedy) and
`_generate_beam_search` from oscar/modeling/modeling_utils.py, and `FiniteStateMachineBuilder.build`,
`ConstrainedBeamSearch.search` and `select_best_beam_with_constraints` from oscar/utils/cbs.py, on a
mock model whose logits are a hash of (seed, image, past, word) that the Rust test
(src/decoding/oscar.rs) computes bit for bit, and writes each search's captions and scores:

    python3 tools/oscar_search_reference.py OSCAR_CHECKOUT tests/fixtures/oscar_search.json   # needs torch

Oscar's imports of pytorch_transformers and anytree are stubbed: the search code does not use them.
Constrained beam search runs one image per call: with more, cbs.py reads every image's first step
from image 0's rows (see src/decoding/cbs.rs), which the engine does not copy.
"""
import json, sys, types
import torch

BOS, PAD, EOS, MASK = 0, 1, 2, 3
M64 = (1 << 64) - 1


def logit(seed, image, past, w):
    """The mock model (src/decoding/oscar.rs `logit`): FNV-style hash, then a value in [-4, 4)."""
    h = 0xCBF29CE484222325
    for x in [seed, image] + past + [w]:
        h ^= x
        h = (h * 0x100000001B3) & M64
        h ^= h >> 29
    return (h % 1000003) / 125000.0 - 4.0


def logits_for(seed, image, past, vocab):
    return torch.tensor([logit(seed, image, past, w) for w in range(vocab)], dtype=torch.float32)


def stub_imports():
    class Base:
        pass

    mods = {
        "transformers": {},
        "transformers.pytorch_transformers": {},
        "transformers.pytorch_transformers.modeling_bert": dict(
            BertConfig=Base, load_tf_weights_in_bert=None, BERT_PRETRAINED_MODEL_ARCHIVE_MAP={}, BertPreTrainedModel=Base
        ),
        "transformers.pytorch_transformers.modeling_utils": dict(PreTrainedModel=Base, WEIGHTS_NAME="", TF_WEIGHTS_NAME=""),
        "transformers.pytorch_transformers.file_utils": dict(cached_path=None),
        "anytree": {},
    }
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m


def mock_model(CaptionPreTrainedModel, seed, vocab, rows_per_image):
    class Mock(CaptionPreTrainedModel):
        def __init__(self):
            self.od_labels_len = 0
            self.num_keep_best = 1
            self.config = types.SimpleNamespace()  # no output_past: the whole caption every step

        def prepare_inputs_for_generation(self, input_ids, past=None):
            mask = torch.full((input_ids.shape[0], 1), MASK, dtype=torch.long)
            return {"input_ids": torch.cat([input_ids, mask], dim=1)}

        def __call__(self, input_ids):
            b, n = input_ids.shape
            out = torch.zeros(b, n, vocab)
            for r in range(b):
                out[r, n - 1] = logits_for(seed, r // rows_per_image, input_ids[r, : n - 1].tolist(), vocab)
            return (out,)

    return Mock()


def caption(ids):
    """Ids after the BOS up to the first EOS."""
    ids = ids[1:]
    return ids[: ids.index(EOS)] if EOS in ids else ids


def main(oscar, out):
    sys.path.insert(0, oscar)
    stub_imports()
    from oscar.modeling.modeling_utils import CaptionPreTrainedModel
    from oscar.utils.cbs import ConstrainedBeamSearch, FiniteStateMachineBuilder, select_best_beam_with_constraints

    cases = []

    def run_greedy(seed, vocab, images, max_length):
        m = mock_model(CaptionPreTrainedModel, seed, vocab, 1)
        ids = torch.full((images, 1), BOS, dtype=torch.long)
        with torch.no_grad():
            dec, lp = m._generate_no_beam_search(ids, 1, max_length, False, 1.0, 0, 1.0, 1.0, PAD, [EOS], images)
        want = [{"tokens": caption(dec[i, 0].tolist()), "score": lp[i, 0].item()} for i in range(images)]
        cases.append(dict(kind="greedy", seed=seed, vocab=vocab, images=images, max_length=max_length, want=want))

    def run_beam(seed, vocab, images, beams, max_length, lp):
        m = mock_model(CaptionPreTrainedModel, seed, vocab, beams)
        ids = torch.full((images, 1), BOS, dtype=torch.long)
        with torch.no_grad():
            dec, conf = m._generate_beam_search(ids, 1, max_length, False, 1.0, 0, 1.0, 1.0, PAD, [EOS], images, lp, beams, vocab)
        want = [{"tokens": caption(dec[i, 0].tolist()), "score": conf[i, 0].item()} for i in range(images)]
        cases.append(dict(kind="beam", seed=seed, vocab=vocab, images=images, beams=beams, max_length=max_length, length_penalty=lp, want=want))

    def run_cbs(seed, vocab, per_image, beams, max_length, min_satisfy):
        want = []
        for image, constraints in enumerate(per_image):
            # every slot becomes a word of one token; its other forms are that token's word forms
            b = FiniteStateMachineBuilder.__new__(FiniteStateMachineBuilder)
            b._tokenizer = types.SimpleNamespace(vocab_size=vocab, convert_tokens_to_ids=lambda ts: [int(t[1:]) for t in ts])
            b._max_given_constraints, b._max_words_per_constraint = 3, 4
            b._num_main_states, b._num_total_states = 8, 32
            b._wordforms, b._constraint2tokens = {}, {}
            names = []
            for n, c in enumerate(constraints):
                words = []
                for j, forms in enumerate(c):
                    word = f"w{n}_{j}"
                    b._constraint2tokens[word] = [f"t{forms[0]}"]
                    b._wordforms[f"t{forms[0]}"] = [f"t{f}" for f in forms]
                    words.append(word)
                names.append(" ".join(words))
            fsm, _ = b.build(names)
            fsm = fsm.unsqueeze(0)
            states = fsm.shape[1]

            def step(curr_ids, state, image=image):
                return torch.stack([logits_for(seed, image, row, vocab) for row in curr_ids.tolist()]), state

            searcher = ConstrainedBeamSearch([EOS], max_length, beams)
            with torch.no_grad():
                preds, sums = searcher.search(torch.full((1, 1), BOS, dtype=torch.long), None, step, fsm)
                best, lp = select_best_beam_with_constraints(preds, sums, torch.tensor([len(constraints)]), min_satisfy, [EOS])
            assert states == 32
            # a masked (-1e20) beam is what cbs.py returns when no accepting state holds a real one
            want.append({"tokens": caption([BOS] + best[0].tolist()), "score": lp[0].item(), "masked": lp[0].item() < -1e9})
        cases.append(
            dict(kind="cbs", seed=seed, vocab=vocab, images=len(per_image), beams=beams, max_length=max_length, min_satisfy=min_satisfy, constraints=per_image, want=want)
        )

    for seed in range(8):
        run_greedy(seed, 7, 3, 8)
    run_greedy(100, 12, 2, 20)
    for seed in range(8):
        for beams in (2, 3, 5):
            run_beam(seed, 7, 2, beams, 8, 1.0)
    for seed in range(4):
        run_beam(50 + seed, 7, 2, 3, 8, 2.0)
        run_beam(60 + seed, 7, 2, 3, 8, 0.7)
        run_beam(70 + seed, 12, 2, 5, 20, 1.0)
    a, b, c = [[4]], [[5], [6]], [[7, 8]]
    for seed in range(6):
        run_cbs(seed, 10, [[], [a]], 3, 8, 2)
        run_cbs(10 + seed, 10, [[a, b], [b, a]], 3, 8, 2)
        run_cbs(20 + seed, 10, [[a, b, c], [c, b]], 3, 8, 2)
        run_cbs(30 + seed, 10, [[a, b, c], [a, b, c]], 2, 8, 1)
        run_cbs(40 + seed, 10, [[a, b, c], [b, c]], 3, 8, 3)
    run_cbs(90, 12, [[a, b, c], [b, c]], 5, 20, 2)
    # too short for two constraints of two tokens: no real beam in an accepting state
    run_cbs(91, 10, [[b, [[9], [4]]]], 2, 3, 2)
    with open(out, "w") as f:
        json.dump({"bos": BOS, "pad": PAD, "eos": EOS, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
