"""TinyBERT-style data augmentation: each training example yields N variants with words replaced.

For every word (whitespace token) of a text, candidates are computed once:

- a word that is one word piece in a masked LM's vocabulary: the LM's top-K
  predictions for that word masked in its sentence (whole words only);
- otherwise, or when the model has no masked-LM head: the K nearest whole words
  to the word's first piece in the model's own word-embedding space (cosine).

Each variant then replaces every word with probability ``replace_prob`` by one of
its candidates, drawn with a generator seeded from ``seed``: the same inputs give
the same variants. The candidates, which do not depend on the seed, and the variants
are cached on disk (JSON lines keyed by a hash of the inputs and settings), in
``$XTC_CACHE/augment`` or ``~/.cache/xtc/augment``: a second seed only draws.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from xtc.data.glue import Example
from xtc.progress import bar


def _cache_dir() -> Path:
    return Path(os.environ.get("XTC_CACHE") or Path.home() / ".cache" / "xtc") / "augment"


class CandidateFinder:
    """Replacement candidates for the words of a text, from a masked LM or embedding neighbours."""

    def __init__(self, model_name: str, top_k: int):
        from transformers import AutoModel, AutoModelForMaskedLM

        from xtc.models import load_tokenizer, quiet_transformers, resolve_model

        self.tokenizer = load_tokenizer(model_name)
        self.top_k = top_k
        source = resolve_model(model_name)
        with quiet_transformers():
            if self._has_trained_head(source):
                self.mlm = AutoModelForMaskedLM.from_pretrained(source).eval()
                embeddings = self.mlm.get_input_embeddings().weight
            else:  # no masked-LM head: embedding neighbours for every word
                self.mlm = None
                embeddings = AutoModel.from_pretrained(source).get_input_embeddings().weight
        # the prediction head alone, to run it on the masked positions only (not on every token of every
        # variant: for a 50-word sentence, 50 x ~70 positions x the vocabulary); None: run the whole model
        self.head = next((getattr(self.mlm, name) for name in ("cls", "lm_head") if hasattr(self.mlm, name)), None)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(embeddings.shape[0])))
        # Whole, alphabetic words only: no "##" pieces, no [CLS]/[unused] tokens, no punctuation.
        self.word_ids = torch.tensor([i for i, t in enumerate(vocab) if t.isalpha()])
        self.vocab = vocab
        unit = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
        self.unit, self.word_unit = unit, unit[self.word_ids]

    @staticmethod
    def _has_trained_head(source: str) -> bool:
        from safetensors import safe_open

        try:
            with safe_open(Path(source) / "model.safetensors", "pt") as f:
                return any(k.startswith(("cls.predictions", "lm_head", "generator_lm_head")) for k in f.keys())
        except (OSError, ValueError):
            return False

    @torch.no_grad()
    def candidates(self, words: list[str]) -> list[list[str]]:
        pieces = [self.tokenizer.tokenize(w) for w in words]
        found: list[list[str]] = [[] for _ in words]
        single = [i for i, p in enumerate(pieces) if len(p) == 1 and self.mlm is not None]
        if single:
            masked = []
            for i in single:
                masked.append(" ".join(self.tokenizer.mask_token if j == i else w for j, w in enumerate(words)))
            batch = self.tokenizer(masked, return_tensors="pt", padding=True, truncation=True, max_length=128)
            positions = (batch["input_ids"] == self.tokenizer.mask_token_id).float().argmax(-1)  # (variants,)
            rows = torch.arange(len(single))
            if self.head is not None:
                hidden = self.mlm.base_model(**batch).last_hidden_state  # (variants, tokens, hidden)
                logits = self.head(hidden[rows, positions])  # (variants, vocab)
            else:
                logits = self.mlm(**batch).logits[rows, positions]  # (variants, tokens, vocab) -> (variants, vocab)
            scores = logits[:, self.word_ids]  # (variants, words)
            for row, i in enumerate(single):
                top = self.word_ids[scores[row].topk(self.top_k + 1).indices]
                found[i] = [t for t in self.tokenizer.convert_ids_to_tokens(top.tolist()) if t != words[i].lower()]
                found[i] = found[i][: self.top_k]
        for i, p in enumerate(pieces):
            if found[i] or not p or not words[i].isalpha():
                continue
            vector = self.unit[self.tokenizer.convert_tokens_to_ids(p[0])]
            top = (self.word_unit @ vector).topk(self.top_k + 1).indices
            found[i] = [self.vocab[int(self.word_ids[j])] for j in top if self.vocab[int(self.word_ids[j])] != p[0]]
            found[i] = found[i][: self.top_k]
        return found


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:24]


def _write_lines(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def word_candidates(examples: list[Example], model: str, top_k: int) -> list[list[list[list[str]]]]:
    """Each example's texts' words' candidates, ``[example][text][word] -> words`` (cached on disk)."""
    cache = _cache_dir() / f"candidates-{_digest([[list(e.texts) for e in examples], model, top_k])}.jsonl"
    if cache.is_file():
        return [json.loads(line) for line in cache.read_text().splitlines()]
    finder = CandidateFinder(model, top_k)
    found = [[finder.candidates(text.split()) for text in e.texts] for e in bar(examples, desc="augment", leave=False)]
    _write_lines(cache, found)
    return found


def augment(examples: list[Example], *, copies: int, replace_prob: float, model: str = "bert-tiny",
            top_k: int = 15, seed: int = 0) -> list[Example]:
    """The examples followed by ``copies`` variants of each (cached on disk)."""
    key = _digest([[list(e.texts), e.label] for e in examples] + [copies, replace_prob, model, top_k, seed])
    cache = _cache_dir() / f"{key}.jsonl"
    if cache.is_file():
        return [Example(tuple(r["texts"]), r["label"]) for r in map(json.loads, cache.read_text().splitlines())]
    rng = np.random.default_rng(seed)
    variants = []
    for example, per_text in zip(examples, word_candidates(examples, model, top_k)):
        for _ in range(copies):
            texts = []
            for text, cands in zip(example.texts, per_text):
                out = [c[rng.integers(len(c))] if c and rng.random() < replace_prob else w
                       for w, c in zip(text.split(), cands)]
                texts.append(" ".join(out))
            variants.append(Example(tuple(texts), example.label))
    result = list(examples) + variants
    _write_lines(cache, [{"texts": list(e.texts), "label": e.label} for e in result])
    return result
