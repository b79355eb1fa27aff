"""Two ways of reading a joint run's slots with what its training data knows, against constrained decoding alone.

    MTBERT_DATA=../shared/data/snips python benchmarks/slot_decoding_priors.py RUN --json OUT

RUN is a finished run with one sentence task and one token task in an input group (`configs/snips/joint.yaml`).
Its dev tag probabilities (`scores/<task>-dev.tsv`) are decided again, the model untouched:

- `intent types`: only the slot types that the training data shows with the utterance's predicted intent (the
  others' probabilities set to 0), then constrained decoding;
- `tag bigrams λ`: constrained decoding with a prior on the tag sequence added to its transitions, λ times
  log p(tag | previous tag) / p(tag) counted on the training tags (add-0.1 smoothing), for λ 0.25, 0.5 and 1.

Each is paired against constrained decoding alone over the same dev utterances (`constrained_decoding.py`'s
`paired`: 1,000 bootstrap resamples, an utterance's intent and slots resampled together). Written: every metric of
each reading, how many utterances it reads otherwise, and the paired differences of slot F1 and frame
accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
from constrained_decoding import dev_results, paired

from mtbert.bench.machine import machine
from mtbert.config import load_config
from mtbert.data.loading import read_split
from mtbert.evaluation.ensemble import read_scores, score_file
from mtbert.evaluation.finished import trained_tasks
from mtbert.evaluation.metrics import compute_metrics
from mtbert.kinds.tag_scheme import OUTSIDE, Transitions, best_tags, transitions

WEIGHTS = (0.25, 0.5, 1.0)
SMOOTHING = 0.1


def intent_types(intents: list[str], tags: list[tuple[str, ...]]) -> dict[str, set[str]]:
    """Per intent, the slot types its training utterances hold."""
    seen: dict[str, set[str]] = defaultdict(set)
    for intent, sequence in zip(intents, tags, strict=True):
        seen[intent].update(tag.split("-", 1)[1] for tag in sequence if tag != OUTSIDE)
    return seen


def bigram_prior(names: list[str], tags: list[tuple[str, ...]]) -> Transitions:
    """log p(tag | previous tag) / p(tag) from the training tags (`start`: after the sentence's start); `end`
    stays 0."""
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    pairs, firsts = np.full((n, n), SMOOTHING), np.full(n, SMOOTHING)
    for sequence in tags:
        ids = [index[t] for t in sequence]
        firsts[ids[0]] += 1
        np.add.at(pairs, (ids[:-1], ids[1:]), 1)
    unigram = np.log(pairs.sum(0) / pairs.sum())
    return Transitions(np.log(firsts / firsts.sum()) - unigram,
                       np.log(pairs / pairs.sum(1, keepdims=True)) - unigram[None, :], np.zeros(n))


def readings(run_dir: Path) -> dict:
    """Every reading's dev results and its paired differences against constrained decoding alone."""
    cfg = load_config(run_dir / "config.yaml")
    specs = trained_tasks(run_dir, cfg)
    (sentence,) = [s for s in specs if s.kind != "token-classification"]
    (token,) = [s for s in specs if s.kind == "token-classification"]
    data = cfg.resolved_data_dir()
    train_intents = {e.id: sentence.label_names[int(e.label)]
                     for e in read_split(sentence, "train", data, report=False).examples}
    train = [e for e in read_split(token, "train", data, report=False).examples if e.id in train_intents]
    train_tags = [tuple(e.label) for e in train]
    types = intent_types([train_intents[e.id] for e in train], train_tags)

    base = dev_results(run_dir, constrained=True)
    _, sentence_pred, _ = base[sentence.name]
    _, _, token_gold = base[token.name]
    ids = [e.id for e in read_split(token, "dev", data, report=False).examples]
    scores = read_scores(run_dir / "scores" / score_file(token.name, "dev"), token)
    probabilities = [np.asarray(scores[i], dtype=float) for i in ids]
    names = list(token.label_names)
    allowed, prior = transitions(names), bigram_prior(names, train_tags)

    def decided(decide) -> dict:
        tags = np.empty(len(ids), dtype=object)
        for k, p in enumerate(probabilities):
            tags[k] = decide(k, p)
        return {**base, token.name: (token, tags, token_gold)}

    def of_intent(k: int, p: np.ndarray) -> np.ndarray:
        kept = types[sentence.label_names[int(sentence_pred[k])]]
        mask = np.array([n == OUTSIDE or n.split("-", 1)[1] in kept for n in names])
        return best_tags(np.where(mask, p, 0.0), allowed)

    variants = {"intent types": decided(of_intent)}
    for weight in WEIGHTS:
        weighted = Transitions(allowed.start + weight * prior.start, allowed.step + weight * prior.step, allowed.end)
        variants[f"tag bigrams {weight:g}"] = decided(lambda _, p, w=weighted: best_tags(p, w))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"benchmark": "slot_decoding_priors", "run": str(run_dir), "commit": commit, **machine(),
            "examples": len(ids), "against": "constrained decoding alone",
            "metrics": {"constrained decoding alone": compute_metrics(base),
                        **{name: compute_metrics(results) for name, results in variants.items()}},
            "changed_utterances": {name: sum(not np.array_equal(a, b) for a, b in
                                             zip(results[token.name][1], base[token.name][1], strict=True))
                                   for name, results in variants.items()},
            "paired": {name: {c: f for c, f in paired(results, base).items() if c != sentence.metric_key}
                       for name, results in variants.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    out = readings(args.run_dir)
    for name, columns in out["paired"].items():
        figures = "; ".join(f"{c} {f['difference']:+.4f} (95% {f['ci95'][0]:+.4f} to {f['ci95'][1]:+.4f})"
                            for c, f in columns.items())
        print(f"{name} ({out['changed_utterances'][name]} utterances read otherwise): {figures}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
