"""What a trained joint run gets wrong on dev: the utterances with a wrong intent or slot, and the kinds of slot error.

    MTBERT_DATA=../shared/data/snips python benchmarks/snips_errors.py RUN --json OUT

RUN is a finished run with one sentence task and one token task in an input group (`configs/snips/joint.yaml`).
Its dev predictions are read back as `benchmarks/constrained_decoding.py` reads them (the token task decided as its
config decides it), and the gold and predicted slot spans compared by seqeval's span reading (conlleval rules). Each
gold span the prediction lacks is a wrong `type` (a predicted span with the same words and another type), a wrong
`boundary` (a predicted span overlapping it) or `missed`; a predicted span overlapping no gold span is `spurious`.
Written: the counts, the most frequent type confusions, and every wrong utterance's id with its wrong spans (word
positions; the data's words are not copied).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from constrained_decoding import dev_results
from seqeval.metrics.sequence_labeling import get_entities

from mtbert.config import load_config
from mtbert.data.loading import read_split


def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of each span, by the conlleval rules."""
    return set(get_entities(list(tags)))


def overlaps(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[1] <= b[2] and b[1] <= a[2]


def slot_errors(gold: set[tuple[str, int, int]], pred: set[tuple[str, int, int]]) -> tuple[Counter, Counter]:
    """The kinds of error (`type`, `boundary`, `missed`, `spurious`) of one utterance's predicted spans, and its
    type confusions ("gold read as predicted")."""
    kinds, confusions = Counter(), Counter()
    for span in gold - pred:
        same_words = [p for p in pred - gold if p[1:] == span[1:]]
        if same_words:
            kinds["type"] += 1
            confusions[f"{span[0]} read as {same_words[0][0]}"] += 1
        elif any(overlaps(span, p) for p in pred):
            kinds["boundary"] += 1
        else:
            kinds["missed"] += 1
    kinds["spurious"] += sum(not any(overlaps(p, g) for g in gold) for p in pred - gold)
    return kinds, confusions


def errors(run_dir: Path) -> dict:
    cfg = load_config(run_dir / "config.yaml")
    results = dev_results(run_dir, constrained=True)
    (sentence, sentence_pred, sentence_gold), = [r for r in results.values() if r[0].kind != "token-classification"]
    (token, token_pred, token_gold), = [r for r in results.values() if r[0].kind == "token-classification"]
    ids = [e.id for e in read_split(token, "dev", cfg.resolved_data_dir(), report=False).examples]
    kinds, confusions, wrong = Counter(), Counter(), []
    intents = sentence.label_names
    for k, (gold_tags, pred_tags) in enumerate(zip(token_gold, token_pred, strict=True)):
        gold, pred = spans(gold_tags), spans([token.label_names[int(i)] for i in pred_tags])
        intent_wrong = int(sentence_pred[k]) != int(sentence_gold[k])
        if gold == pred and not intent_wrong:
            continue
        utterance_kinds, utterance_confusions = slot_errors(gold, pred)
        kinds.update(utterance_kinds)
        confusions.update(utterance_confusions)
        wrong.append({"id": ids[k], "intent": intents[int(sentence_gold[k])] if intents else int(sentence_gold[k]),
                      "predicted_intent": intents[int(sentence_pred[k])] if intents else int(sentence_pred[k]),
                      "missing_spans": sorted(gold - pred), "extra_spans": sorted(pred - gold)})
    return {"run": str(run_dir), "utterances": len(token_gold), "wrong_utterances": len(wrong),
            "wrong_intent": sum(w["intent"] != w["predicted_intent"] for w in wrong),
            "wrong_slots": sum(bool(w["missing_spans"] or w["extra_spans"]) for w in wrong),
            "slot_errors": dict(kinds), "type_confusions": dict(confusions.most_common()), "wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    out = errors(args.run_dir)
    print({k: v for k, v in out.items() if k not in ("wrong", "type_confusions")})
    print("most frequent type confusions:", dict(list(out["type_confusions"].items())[:8]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
