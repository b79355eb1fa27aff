"""`token-classification`: one tag per word (named entities, slots), scored by entity spans as conlleval does.

An example is a list of words and, when labeled, one tag per word (BIO or IOBES names such as `B-PER`,
`I-PER`, `O`). The words are split into subwords by the task's tokenizer (`is_split_into_words`); a word's tag
goes on its first subword and the loss ignores the others (`label_all_subwords: true` labels every subword).
The head reads every token's hidden state; a word's prediction is the argmax at its first subword, or with
`constrained_decoding: true` the sentence's most probable tag sequence that its BIO or IOBES scheme allows
(kinds/tag_scheme.py).

Each example's loss is the mean cross-entropy of its labeled words, so an utterance weighs as much as a
sentence-level example (sample weighting and the step's scale count examples), and the loss of a batch, of
micro-batches or of several ranks is the same sum. Words beyond `max_length` lose their label in training and
are predicted as the outside tag `O` (both counted in a warning when the data is encoded); tags that training
never saw (dev or test data may have them) are ignored by the loss and scored as misses.

Metrics: entity-level precision, recall and F1 (`seqeval`'s default mode, the conlleval rules: an entity counts
when its type and both ends are right, and `I-X` after `O` starts an entity) and word accuracy (`token_acc`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mtbert.errors import ConfigError, DataError, MtbertError
from mtbert.kinds.base import ExportPlan, LabelParser, TaskKind, type_name
from mtbert.kinds.tag_scheme import Transitions, best_tags, scheme_problem, transitions

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)

IGNORED = -100  # the label of a token the loss skips (as transformers' token classification)
OUTSIDE = "O"
USAGE_TOKENS = ("from transformers import pipeline\n\n"
                "tagger = pipeline(\"token-classification\", model=\"{location}\", aggregation_strategy=\"first\")\n"
                "entities = tagger(\"play the new album by daft punk on spotify\")")


@dataclass(frozen=True)
class Words:
    """What a token task keeps per encoded example: its words, and the word of each token (-1: a special token)."""

    words: tuple[str, ...]
    word_ids: tuple[int, ...]

    @property
    def kept(self) -> int:
        """How many words have a token within `max_length`."""
        return max(self.word_ids, default=-1) + 1


class TokenClassification(TaskKind):
    """One tag per word, from the tags of the training data (`label_names`, sorted, or as given)."""

    name = "token-classification"
    aliases = ("token", "ner")
    has_classes = True
    prediction_suffix = ".jsonl"
    task_keys = ("conll_columns", "label_all_subwords", "constrained_decoding")

    # ---- config ---------------------------------------------------------------------------------
    def validate(self, spec: TaskSpec, where: str) -> None:
        if len(spec.text_columns) != 1:
            raise ConfigError(f"{where}.text_columns: a token-classification task reads one column of words")
        columns = spec.conll_columns
        if columns is not None and (len(columns) != 2 or any(isinstance(c, bool) or not isinstance(c, int)
                                                             for c in columns)):
            raise ConfigError(f"{where}.conll_columns: must be two column numbers [WORD_INDEX, TAG_INDEX] "
                              "(from 0; -1 is the last)")
        if not isinstance(spec.label_all_subwords, bool):
            raise ConfigError(f"{where}.label_all_subwords: must be true or false")
        if not isinstance(spec.constrained_decoding, bool):
            raise ConfigError(f"{where}.constrained_decoding: must be true or false")
        if spec.constrained_decoding and spec.label_names is not None:
            problem = scheme_problem(spec.label_names)
            if problem is not None:
                raise ConfigError(f"{where}.constrained_decoding: needs BIO or IOBES tags, but {problem}")

    # ---- data -----------------------------------------------------------------------------------
    def read_text(self, value: Any, column: str) -> tuple[Any, str | None]:
        """A list of words, or a text split on whitespace."""
        if value is None:
            return None, f"'{column}' is empty (null)"
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list | tuple):
            return None, f"'{column}' is {type_name(value)}, not a list of words"
        if not value:
            return None, f"'{column}' is an empty sentence (no words)"
        if not all(isinstance(w, str) and w.strip() for w in value):
            return None, f"'{column}' holds a word that is not a non-empty text"
        return tuple(w.strip() for w in value), None

    def texts_from_line(self, spec: TaskSpec, line: str) -> tuple[tuple[Any, ...] | None, str | None]:
        """A line typed on standard input: its words, split on whitespace."""
        words = tuple(line.split())
        return ((words,), None) if words else (None, "an empty sentence (no words)")

    def texts_from_input(self, spec: TaskSpec, item: Any) -> tuple[tuple[Any, ...] | None, str | None]:
        """A sentence given to `MultiTaskModel.predict`: a list of words, or a string split on whitespace."""
        want = "a sentence (a list of words, or a string split on whitespace)"
        if isinstance(item, str):
            return ((tuple(item.split()),), None) if item.split() else (None, want)
        if isinstance(item, Sequence) and item and all(isinstance(w, str) and w.strip() for w in item):
            return (tuple(w.strip() for w in item),), None
        return None, want

    def input_words(self, spec: TaskSpec) -> str:
        return "sentences"

    def plain_texts(self, spec: TaskSpec, texts: tuple[Any, ...]) -> tuple[str, ...]:
        """Each sentence's words joined by spaces."""
        return tuple(" ".join(words) for words in texts)

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        """A list of tags (names, or indices into `label_names`), or a text of tags split on whitespace."""
        names = spec.label_names

        def parse(raw: Any) -> tuple[Any, str | None]:
            if raw is None:
                return None, "no tags (null)"
            tags = raw.split() if isinstance(raw, str) else raw
            if not isinstance(tags, list | tuple):
                return None, f"the tags are {type_name(raw)}, not a list"
            out = []
            for tag in tags:
                if isinstance(tag, int) and not isinstance(tag, bool):
                    if names is None or not 0 <= tag < len(names):
                        return None, f"tag {tag} is a number that names no tag (give label_names)"
                    tag = names[tag]
                if not isinstance(tag, str) or not tag.strip():
                    return None, f"tag {tag!r:.20} is not a non-empty text"
                out.append(tag.strip())
            return tuple(out), None

        return parse

    def label_names_of(self, spec: TaskSpec, raw: Any) -> tuple[list[str], str | None]:
        """The tags a raw training label holds (to find the task's tag set); numbers stay numbers (indices)."""
        tags = raw.split() if isinstance(raw, str) else raw
        if not isinstance(tags, list | tuple) or not tags:
            return [], "no tags"
        return [t.strip() if isinstance(t, str) else str(t) for t in tags], None

    def check_label(self, spec: TaskSpec, texts: tuple[Any, ...], label: Any) -> tuple[Any, str | None]:
        """One tag per word."""
        if isinstance(label, tuple) and len(label) != len(texts[0]):
            return None, f"{len(texts[0])} words but {len(label)} tags"
        return label, None

    def encode(self, tokenizer: Any, spec: TaskSpec, examples: Sequence[Any], max_length: int,
               architecture: str) -> tuple[list[list[list[int]]], list[list[list[int]]], list[Any] | None]:
        """The words as subwords (`is_split_into_words`), with each token's word in `extras` (`Words`)."""
        if not examples:
            return [], [], []
        if spec.label_names is None:
            raise DataError(f"task {spec.name}: its tags are numbers; give label_names (the tag of each number)")
        if spec.constrained_decoding:
            problem = scheme_problem(spec.label_names)
            if problem is not None:
                raise DataError(f"task {spec.name}: constrained_decoding needs BIO or IOBES tags, but {problem}")
        enc = tokenizer([list(e.texts[0]) for e in examples], is_split_into_words=True, truncation=True,
                        max_length=max_length, return_token_type_ids=True)
        types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
        extras = [Words(tuple(e.texts[0]), tuple(-1 if w is None else w for w in enc.word_ids(i)))
                  for i, e in enumerate(examples)]
        self._report(spec, examples, extras, max_length)
        return ([[list(ids)] for ids in enc["input_ids"]], [[list(t)] for t in types], extras)

    def _report(self, spec: TaskSpec, examples: Sequence[Any], extras: list[Words], max_length: int) -> None:
        """Warn of words cut off by `max_length`, and of tags the task does not know."""
        lost = [len(x.words) - x.kept for x in extras]
        if any(lost):
            logger.warning("task %s: %d words of %d examples are beyond max_length (%d tokens): they lose their tag "
                           "in training and are predicted as %s", spec.name, sum(lost), sum(n > 0 for n in lost),
                           max_length, OUTSIDE)
        if spec.constrained_decoding:
            allowed = self.transitions(spec)
            broken = [e for e in examples if e.label is not None and not allows(allowed, spec, e.label)]
            if broken:
                logger.warning("task %s: the tags of %d examples (the first: id %s) break the rules of their scheme, "
                               "which constrained decoding never predicts (I- after O: IOB1 tags? convert them to "
                               "IOB2)", spec.name, len(broken), broken[0].id)
        known = set(spec.label_names or ())
        unknown = Counter(t for e in examples if e.label is not None for t in e.label if t not in known)
        if unknown and spec.label_names is not None:
            shown = ", ".join(f"{tag} ({n})" for tag, n in unknown.most_common(10))
            logger.warning("task %s: %d words carry %d tags the training data does not have (%s): ignored by the "
                           "loss and scored as misses", spec.name, sum(unknown.values()), len(unknown), shown)

    def label_tensor(self, labels: Sequence[Any]) -> torch.Tensor | None:
        return None  # laid out per token by `collate`, which knows each token's word

    def collate(self, encoded: Any, indices: list[int], pad_token_id: int, packed: bool,
                row_width: int = 0) -> dict[str, Any]:
        """The batch of the base kind, with `word_ids` (per example) and the labels laid out per token
        `(examples, longest)`: a word's tag index on its first subword (or every subword), IGNORED elsewhere."""
        batch = super().collate(encoded, indices, pad_token_id, packed, row_width)
        extras = [encoded.extras[i] for i in indices]
        batch["word_ids"] = [x.word_ids for x in extras]
        batch["word_counts"] = [len(x.words) for x in extras]
        batch["labels"] = None
        if encoded.labels and encoded.labels[indices[0]] is not None:
            spec = encoded.spec
            index = {name: k for k, name in enumerate(spec.label_names or ())}
            longest = max(len(x.word_ids) for x in extras)
            labels = torch.full((len(indices), longest), IGNORED, dtype=torch.long)
            for row, (i, x) in enumerate(zip(indices, extras, strict=True)):
                tags = encoded.labels[i]
                previous = -1
                for position, word in enumerate(x.word_ids):
                    if word >= 0 and (word != previous or spec.label_all_subwords):
                        labels[row, position] = index.get(tags[word], IGNORED)
                    previous = word
            batch["labels"] = labels
        return batch

    # ---- model ----------------------------------------------------------------------------------
    def features(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """Every token's hidden state (examples, tokens, hidden)."""
        return hidden

    def head_outputs(self, spec: TaskSpec) -> int:
        return len(spec.label_names) if spec.label_names else spec.num_labels

    # ---- training -------------------------------------------------------------------------------
    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        """The sum over examples of each example's mean cross-entropy over its labeled tokens."""
        labels = labels.to(outputs.device)
        per_token = F.cross_entropy(outputs.transpose(1, 2), labels, ignore_index=IGNORED, reduction="none")
        counted = (labels != IGNORED).sum(1)
        return (per_token.sum(1) / counted.clamp(min=1)).sum()

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-example mean over its tokens of KL(reference || outputs)."""
        log_p, log_q = F.log_softmax(reference.float(), dim=-1), F.log_softmax(outputs.float(), dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1)

    # ---- evaluation -----------------------------------------------------------------------------
    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example, each word's tag (`best`, from the probabilities at its first subword; `O` for a word cut off
        by max_length) and the kept words' tag probabilities, padded with -1 (tags) and 0 (probabilities) to the
        batch's most words."""
        if batch is None or "word_ids" not in batch:
            raise ValueError("a token-classification task decides from the batch's word_ids")
        probabilities = torch.softmax(outputs.float(), dim=-1)
        firsts = [[p for p, w in enumerate(ids) if w >= 0 and (p == 0 or ids[p - 1] != w)]
                  for ids in batch["word_ids"]]
        counts = batch.get("word_counts") or [len(f) for f in firsts]
        most = max(counts, default=0)
        tags = torch.full((len(firsts), most), -1, dtype=torch.long)
        scores = torch.zeros((len(firsts), most, outputs.shape[-1]))
        outside = list(spec.label_names or ()).index(OUTSIDE) if OUTSIDE in (spec.label_names or ()) else -1
        for row, positions in enumerate(firsts):
            tags[row, len(positions): counts[row]] = outside
            if positions:
                index = torch.tensor(positions, device=outputs.device)
                scores[row, : len(positions)] = probabilities[row, index].cpu()
                tags[row, : len(positions)] = torch.from_numpy(self.best(spec, scores[row, : len(positions)].numpy()))
        return tags, scores

    def transitions(self, spec: TaskSpec) -> Transitions:
        """The allowed tag transitions of the task's scheme (for `constrained_decoding`)."""
        return _transitions(tuple(spec.label_names or ()))

    def best(self, spec: TaskSpec, probabilities: np.ndarray) -> np.ndarray:
        """One sentence's tags from its words' tag probabilities (words x tags): the most probable allowed
        sequence with `constrained_decoding`, else each word's most probable tag."""
        if spec.constrained_decoding:
            return best_tags(probabilities, self.transitions(spec))
        return np.asarray(probabilities).argmax(-1)

    def gather(self, n: int, done: list[tuple[list[int], Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Per example an array of its words' tag indices, and one of the kept words' probabilities (words x
        tags)."""
        predictions = np.empty(n, dtype=object)
        scores = np.empty(n, dtype=object)
        for indices, tags, probabilities in done:
            for row, i in enumerate(indices):
                words = int((np.asarray(tags[row]) >= 0).sum())
                kept = int((np.asarray(probabilities[row]).sum(-1) > 0).sum())
                predictions[i] = np.asarray(tags[row][:words], dtype=int)
                scores[i] = np.asarray(probabilities[row][:kept], dtype=float)
        return predictions, scores

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        """Per example its tuple of tag names (unknown tags kept: they score as misses)."""
        out = np.empty(len(labels), dtype=object)
        for i, label in enumerate(labels):
            out[i] = tuple(label)
        return out

    def tag_names(self, spec: TaskSpec, prediction: Any, words: int) -> list[str]:
        """A prediction's tag names for `words` words: the tags of the kept words, `O` for the words cut off."""
        names = spec.label_names or ()
        tags = [names[int(k)] for k in np.asarray(prediction, dtype=int)[:words]]
        return tags + [OUTSIDE] * (words - len(tags))

    def _paired(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> tuple[list, list]:
        truth = [list(y) for y in labels]
        guessed = [self.tag_names(spec, p, len(y)) for p, y in zip(predictions, truth, strict=True)]
        return guessed, truth

    def metric(self, spec: TaskSpec) -> str:
        return "f1"

    def metric_keys(self, spec: TaskSpec) -> tuple[str, ...]:
        return ("f1", "precision", "recall", "token_acc")

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Entity precision, recall and F1 (seqeval, conlleval rules) and word accuracy."""
        from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

        guessed, truth = self._paired(spec, predictions, labels)
        return {"f1": float(f1_score(truth, guessed, zero_division=0)),
                "precision": float(precision_score(truth, guessed, zero_division=0)),
                "recall": float(recall_score(truth, guessed, zero_division=0)),
                "token_acc": float(accuracy_score(truth, guessed))}

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        """The primary metric on each row of resampled examples, from per-example counts summed over the resample
        (true, predicted and right entities: the micro scores seqeval computes; right and all words)."""
        from seqeval.metrics.sequence_labeling import get_entities

        guessed, truth = self._paired(spec, predictions, labels)
        counts = np.zeros((len(truth), 5))
        for i, (g, t) in enumerate(zip(guessed, truth, strict=True)):
            true_set, guess_set = set(get_entities(t)), set(get_entities(g))
            right_words = sum(a == b for a, b in zip(g, t, strict=True))
            counts[i] = (len(true_set), len(guess_set), len(true_set & guess_set), right_words, len(t))
        true, guess, right, right_words, words = counts[indices].sum(1).T  # each: one value per resample

        def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)

        metric = spec.metric or self.metric(spec)
        if metric == "precision":
            return ratio(right, guess)
        if metric == "recall":
            return ratio(right, true)
        if metric == "token_acc":
            return ratio(right_words, words)
        return ratio(2 * right, true + guess)

    def example_correct(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Whether every word's tag is right, per example."""
        guessed, truth = self._paired(spec, predictions, labels)
        return np.array([g == t for g, t in zip(guessed, truth, strict=True)], dtype=bool)

    # ---- files and ensembles --------------------------------------------------------------------
    def format_value(self, spec: TaskSpec, value: Any) -> str:
        """A prediction as space-separated tag names."""
        return " ".join(self.tag_names(spec, value, len(value)))

    def json_value(self, spec: TaskSpec, value: Any) -> Any:
        """The tag names of every word, as a list."""
        return self.tag_names(spec, value, len(value))

    def score_columns(self, spec: TaskSpec) -> list[str]:
        return [f"prob_{k}" for k in range(self.head_outputs(spec))]

    def write_predictions(self, path: Path, spec: TaskSpec, ids: Sequence[str], predictions: np.ndarray,
                          extras: Sequence[Any] | None) -> None:
        """JSON Lines `{"id", "tokens", "tags"}` (one tag per input word) at `path`, and a CoNLL copy beside it
        (`word<TAB>tag` per line, a blank line after each sentence)."""
        from mtbert.io import atomic_write_text

        if extras is None:
            raise ValueError("token predictions are written with their words")
        lines, conll = [], []
        for example_id, prediction, words in zip(ids, predictions, extras, strict=True):
            tags = self.tag_names(spec, prediction, len(words.words))
            lines.append(json.dumps({"id": example_id, "tokens": list(words.words), "tags": tags},
                                    ensure_ascii=False))
            conll.append("".join(f"{w}\t{t}\n" for w, t in zip(words.words, tags, strict=True)))
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        atomic_write_text(path.with_suffix(".conll"), "\n".join(conll))

    def write_scores(self, path: Path, spec: TaskSpec, ids: Sequence[str], scores: np.ndarray) -> None:
        """One row per kept word: `id`, `word` (its position, from 0) and the tag probabilities."""
        from mtbert.io import atomic_write_text

        lines = ["\t".join(["id", "word", *self.score_columns(spec)])]
        for example_id, rows in zip(ids, scores, strict=True):
            lines += ["\t".join([example_id, str(w), *(f"{v:.6g}" for v in row)]) for w, row in enumerate(rows)]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def read_scores(self, path: Path, spec: TaskSpec) -> dict[str, Any] | None:
        """{id: probabilities (words x tags)} of a scores file written by `write_scores`."""
        expected = ["id", "word", *self.score_columns(spec)]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot be read ({err})") from None
        if not lines or lines[0].split("\t") != expected:
            raise DataError(f"{path}, line 1: expected the columns id, word, prob_0.. for task {spec.name}")
        rows: dict[str, list[np.ndarray]] = {}
        for number, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            try:
                if len(parts) != len(expected) or int(parts[1]) != len(rows.get(parts[0], [])):
                    raise ValueError
                rows.setdefault(parts[0], []).append(np.array([float(v) for v in parts[2:]]))
            except ValueError:
                raise DataError(f"{path}, line {number}: expected the next word's {len(expected) - 2} tag "
                                "probabilities") from None
        return {example_id: np.stack(words) for example_id, words in rows.items()}

    def _rows(self, path: Path) -> list[tuple[int, dict[str, Any]]]:
        """The JSON objects of a prediction file with their line numbers (each with id, tokens and tags)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot be read ({err})") from None
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ok = isinstance(row, dict) and isinstance(row["tags"], list) and isinstance(row["tokens"], list)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok or "id" not in row or len(row["tags"]) != len(row["tokens"]):
                raise DataError(f"{path}, line {number}: expected a JSON object with id, tokens and as many tags")
            rows.append((number, row))
        return rows

    def read_predictions(self, path: Path, spec: TaskSpec) -> dict[str, Any]:
        """{id: tag indices} of a JSON Lines prediction file written by `write_predictions`."""
        names = {name: k for k, name in enumerate(spec.label_names or ())}
        values: dict[str, Any] = {}
        for number, row in self._rows(path):
            unknown = [t for t in row["tags"] if t not in names]
            if unknown:
                raise DataError(f"{path}, line {number}: tag {unknown[0]!r:.30} is not a tag of task {spec.name}")
            values[str(row["id"])] = np.array([names[t] for t in row["tags"]], dtype=int)
        return values

    def prediction_extras(self, path: Path, spec: TaskSpec) -> dict[str, Any] | None:
        """{id: its words} of a prediction file, to write an ensemble's."""
        return {str(row["id"]): Words(tuple(row["tokens"]), ()) for _, row in self._rows(path)}

    def vote_rule(self, spec: TaskSpec, scores: bool) -> str:
        return "per word, the most voted tag; a tie goes to the earliest member listed"

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """Per word, the majority tag of the members (members x examples of tag arrays), a tie going to the
        earliest member listed."""
        from mtbert.kinds.sentence import majority

        members, n = predictions.shape
        out = np.empty(n, dtype=object)
        for i in range(n):
            stacked = np.stack([np.asarray(predictions[m, i], dtype=int) for m in range(members)])
            out[i] = majority(stacked, self.head_outputs(spec))
        return out

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        """Per example, its words' tags as `decide` takes them (scores: examples of words x tags arrays)."""
        out = np.empty(len(scores), dtype=object)
        for i, rows in enumerate(scores):
            out[i] = self.best(spec, np.asarray(rows, dtype=float)) if len(rows) else np.zeros(0, dtype=int)
        return out

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        same = [np.array_equal(a, b) for a, b in zip(first, second, strict=True)]
        return "same_tags", float(np.mean(same)) if same else 1.0

    # ---- export and model card ------------------------------------------------------------------
    def transformers_labels(self, spec: TaskSpec, labels: Sequence[Any]) -> tuple[int, list[Any]]:
        return self.head_outputs(spec), list(labels)

    def export_plan(self, spec: TaskSpec, architecture: str) -> ExportPlan:
        """A transformers `AutoModelForTokenClassification` (the encoder and one linear classifier per token)."""
        if spec.head_hidden_sizes:
            raise MtbertError(
                f"--task {spec.name}: a token head with hidden layers (head_hidden_sizes "
                f"{list(spec.head_hidden_sizes)}) cannot be exported, because AutoModelForTokenClassification has "
                "one linear classifier on the encoder; train with head_hidden_sizes: [] to export this task")
        return ExportPlan("AutoModelForTokenClassification", "cross",
                          "pipeline(\"token-classification\") returns the entities (or, without aggregation, a tag "
                          "per subword: a word's tag is its first subword's)",
                          pipeline_tag="token-classification", usage=USAGE_TOKENS, library="transformers",
                          layout="the head's linear layer as the classifier on every token")

    def hub_task_type(self, spec: TaskSpec) -> str:
        return "token-classification"


@functools.lru_cache(maxsize=16)
def _transitions(label_names: tuple[str, ...]) -> Transitions:
    return transitions(label_names)


def allows(allowed: Transitions, spec: TaskSpec, tags: Sequence[str]) -> bool:
    """Whether a sentence's tags (names; an unknown tag breaks no rule) follow the transitions."""
    index = {name: k for k, name in enumerate(spec.label_names or ())}
    known = [index.get(t) for t in tags]
    if known and known[0] is not None and allowed.start[known[0]] < 0:
        return False
    if known and known[-1] is not None and allowed.end[known[-1]] < 0:
        return False
    return all(a is None or b is None or allowed.step[a, b] == 0 for a, b in itertools.pairwise(known))


KIND = TokenClassification()
