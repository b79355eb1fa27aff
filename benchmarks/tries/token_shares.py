"""Real tokens as a share of the tokens each contender processes, on the examples `bench throughput` uses.

Training (a seeded random 256 of the training file, batches of 16 in order): Trainer's padded batches vs
mtbert's packed rows. Prediction (the first 256 dev pairs, batches of 64): CrossEncoder.predict's batches
(sorted by characters, padded) vs mtbert's length-sorted packed rows, as wide as the longest or up to 128.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/token_shares.py
"""

from __future__ import annotations

from common import DATA, N

from mtbert.bench.throughput import sample_examples
from mtbert.data import encode_examples, length_sorted_batches
from mtbert.data.encoding import collate_packed
from mtbert.model import load_encoder
from mtbert.model.packing import packed_tokens
from mtbert.tasks import BUILTIN_TASKS


def packed(encoded, batches, width: int = 0) -> int:
    return sum(packed_tokens(collate_packed(encoded, b, 0, width)["inputs"][0])[1] for b in batches)


def main() -> None:
    _, tokenizer = load_encoder(None, 0.1)
    for task in ("sst", "sts"):
        spec = BUILTIN_TASKS[task]
        encoded = encode_examples(tokenizer, spec, sample_examples(DATA / spec.train_file, spec, N, shuffle=True),
                                  128, "cross")
        lengths = [len(f[0]) for f in encoded.features]
        batches = [list(range(i, min(i + 16, N))) for i in range(0, N, 16)]
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        mine = packed(encoded, batches)
        print(f"training {task}: real {sum(lengths)}, Trainer {padded} ({sum(lengths) / padded:.3f} real), "
              f"mtbert {mine} ({sum(lengths) / mine:.3f}); Trainer/mtbert {padded / mine:.3f}")
    for task in ("para", "sts"):
        spec = BUILTIN_TASKS[task]
        examples = sample_examples(DATA / spec.dev_file, spec, N, shuffle=False)
        encoded = encode_examples(tokenizer, spec, examples, 128, "cross")
        lengths = [len(f[0]) for f in encoded.features]
        order = sorted(range(N), key=lambda i: -sum(len(t) for t in examples[i].texts))  # CrossEncoder's order
        cross = sum(len(order[s:s + 64]) * max(lengths[i] for i in order[s:s + 64]) for s in range(0, N, 64))
        batches = list(length_sorted_batches(encoded, 64))
        narrow, wide = packed(encoded, batches), packed(encoded, batches, 128)
        real = sum(lengths)
        print(f"prediction {task}: real {real}, CrossEncoder {cross} ({real / cross:.3f} real), mtbert rows as "
              f"wide as the longest {narrow} ({real / narrow:.3f}), up to 128 {wide} ({real / wide:.3f})")


if __name__ == "__main__":
    main()
