"""Further masked-language-model pretraining of the backbone on the tasks' own training sentences.

`mlm_steps: N` in a run's config first trains the backbone's masked-LM objective (transformers'
AutoModelForMaskedLM and DataCollatorForLanguageModeling: 15% of the tokens masked, 80/10/10) for N steps of
`per_device_train_batch_size` sentences, drawn from every distinct sentence of the tasks' training files, and
then fine-tunes from that encoder. Only training sentences are read: dev and test texts stay unseen.
A backbone shipped without a masked-LM head (all-MiniLM-L6-v2 is one) starts with a fresh head tied to its
word embeddings. The encoder is saved in `<output_dir>/mlm/`, which a resumed run reuses.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, get_scheduler

from mtbert.config import TrainConfig
from mtbert.data.loading import read_split, resolve_labels
from mtbert.errors import MtbertError
from mtbert.io import append_jsonl, atomic_dir
from mtbert.model import default_backbone, load_encoder

logger = logging.getLogger(__name__)
SETTINGS_FILE = "mtbert_mlm.json"  # what the encoder in the folder was pretrained with


def training_sentences(cfg: TrainConfig) -> list[str]:
    """Every distinct text of the tasks' training files, in file order (a token task's words joined by spaces)."""
    seen: dict[str, None] = {}
    for spec in cfg.task_specs():
        result = read_split(resolve_labels(spec, cfg.resolved_data_dir()), "train", cfg.resolved_data_dir())
        if result is None:
            continue
        examples = result.examples
        if cfg.max_train_samples:
            examples = examples[: cfg.max_train_samples]
        for example in examples:
            seen.update((text, None) for text in spec.task_kind.plain_texts(spec, example.texts) if text.strip())
    if not seen:
        raise MtbertError("mlm_steps: the tasks' training files hold no sentences to pretrain on")
    return list(seen)


def pretrain_mlm(cfg: TrainConfig, output_dir: Path, device: torch.device) -> Path:
    """Masked-LM pretraining of `cfg.model_name_or_path` for `cfg.mlm_steps` steps; returns the encoder's folder.

    A folder that already holds the encoder (an earlier, finished pretraining of this run) is returned as is when
    it was pretrained with the same settings; with other settings it is an error (nothing is silently reused).
    """
    source = cfg.model_name_or_path or default_backbone()
    settings = {"model_name_or_path": source, "mlm_steps": cfg.mlm_steps, "mlm_learning_rate": cfg.mlm_learning_rate,
                "mlm_probability": cfg.mlm_probability, "seed": cfg.seed, "max_length": cfg.max_length,
                "per_device_train_batch_size": cfg.per_device_train_batch_size, "tasks": cfg.tasks}
    if (output_dir / "config.json").is_file():
        done = json.loads((output_dir / SETTINGS_FILE).read_text(encoding="utf-8")) \
            if (output_dir / SETTINGS_FILE).is_file() else None
        if done != json.loads(json.dumps(settings)):
            raise MtbertError(f"mlm_steps: {output_dir} was pretrained with other settings ({done}); remove it or "
                              "pass --overwrite_output_dir to pretrain again")
        logger.info("masked-LM pretraining: reusing %s", output_dir)
        return output_dir
    torch.manual_seed(cfg.seed)  # before the masked-LM head (absent from a sentence-embedding checkpoint) is drawn
    encoder, tokenizer = load_encoder(source, cfg.dropout, cfg.trust_remote_code)
    try:
        mlm = AutoModelForMaskedLM.from_pretrained(source, config=encoder.config,
                                                   trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise MtbertError(f"mlm_steps: '{source}' has no masked-LM model class ({str(err).splitlines()[0]})") from None
    sentences = training_sentences(cfg)
    order = np.random.default_rng(cfg.seed)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=cfg.mlm_learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=math.ceil(0.06 * cfg.mlm_steps),
                              num_training_steps=cfg.mlm_steps)
    mlm.to(device).train()
    batch_size = cfg.per_device_train_batch_size
    queue: list[int] = []
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = output_dir.parent / "mlm_log.jsonl"
    log_path.unlink(missing_ok=True)
    logger.info("masked-LM pretraining: %d steps over %d training sentences", cfg.mlm_steps, len(sentences))
    for step in tqdm(range(1, cfg.mlm_steps + 1), desc="masked-LM pretraining", dynamic_ncols=True, mininterval=2.0):
        while len(queue) < batch_size:
            queue.extend(order.permutation(len(sentences)).tolist())
        chosen, queue = queue[:batch_size], queue[batch_size:]
        encoded = tokenizer([sentences[i] for i in chosen], truncation=True, max_length=cfg.max_length)
        features = [{k: v[i] for k, v in encoded.items()} for i in range(len(chosen))]
        batch = collator(features)
        while not (batch["labels"] != -100).any():  # nothing masked: the loss would be 0 / 0
            batch = collator(features)
        loss = mlm(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mlm.parameters(), cfg.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % cfg.logging_steps == 0 or step == cfg.mlm_steps:
            append_jsonl(log_path, {"step": step, "mlm_loss": loss.item(), "lr": scheduler.get_last_lr()[0]})
    # the trained weights in the backbone's own AutoModel class (its pooler, unused by masked-LM, as it was)
    missing = set(encoder.load_state_dict(mlm.base_model.state_dict(), strict=False).missing_keys)
    if any(not key.startswith("pooler.") for key in missing):
        raise MtbertError(f"mlm_steps: the masked-LM model of '{source}' lacks encoder weights {sorted(missing)[:3]}")
    def save(folder: Path) -> None:
        encoder.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    atomic_dir(output_dir, save)
    return output_dir
