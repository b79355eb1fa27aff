"""Packed rows as wide as the longest example (0) or up to 64, 128, 256 tokens: tokens processed and speed.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/prediction_rows.py sts 9   # or para; rounds
"""

from __future__ import annotations

import sys

from common import N, dev_model, side_by_side

from mtbert.data import length_sorted_batches
from mtbert.data.encoding import collate_packed
from mtbert.model import inference as evaluate  # predict_set and its row width live in model/inference.py
from mtbert.model.packing import packed_tokens

WIDTHS = (0, 64, 128, 256)


def main(task: str, rounds: int) -> None:
    model, encoded, pad = dev_model(task)
    reference = None
    for width in WIDTHS:
        evaluate.PREDICTION_ROW_WIDTH = width
        out = evaluate.predict_set(model, encoded, 64, pad)[0]
        reference = out if reference is None else reference
        tokens = [packed_tokens(collate_packed(encoded, b, pad, width)["inputs"][0])
                  for b in length_sorted_batches(encoded, 64)]
        real, processed = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
        print(f"width {width}: {processed} tokens processed, {real / processed:.3f} real, "
              f"max |difference| to width 0: {abs(out - reference).max():.2g}")

    def at(width: int):
        def run() -> None:
            evaluate.PREDICTION_ROW_WIDTH = width
            evaluate.predict_set(model, encoded, 64, pad)
        return run

    side_by_side({f"width {w}": at(w) for w in WIDTHS}, rounds=rounds, items=N)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sts", int(sys.argv[2]) if len(sys.argv) > 2 else 9)
