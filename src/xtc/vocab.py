"""Vocabulary trimming: a trained model folder -> the same model over the tokens a task's data uses.

The word table is about half of a 3-layer 1-bit MiniLM file (30522 rows), and a GLUE task's training
split uses 5-14 thousand of them. Trimming keeps the rows of the tokens used, of every single-character
token (so that any word still spells out in pieces instead of becoming [UNK]) and of the special tokens,
in their order, and shrinks the WordPiece vocabulary of tokenizer.json with them. Given a number of rows,
it fills the table up to it with the most frequent other tokens (the lowest ids, skipping the [unused...]
placeholders), so that dev and user text is split less often. On text made of the kept tokens the model
computes what it did: the tokenization is the same up to the renumbering, and each row's quantization
depends on that row only (one scale per row; a table with one scale for the whole matrix is refused). A
word of other text whose pieces were dropped is split into the pieces that remain.

WordPiece tokenizers only (BERT, ELECTRA, DistilBERT): a BPE vocabulary would also need its merges cut.
"""

import json
import shutil
from pathlib import Path

from xtc.arch import architecture
from xtc.errors import XtcError

_TOKENIZER, _TOKENIZER_CONFIG, _VOCAB = "tokenizer.json", "tokenizer_config.json", "vocab.txt"
_CONFIG, _WEIGHTS = "config.json", "model.safetensors"


def _single_character(token: str, prefix: str) -> bool:
    return len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1)


def trim_problem(tokenizer: dict, word_rule) -> str | None:
    """Why a model cannot be trimmed, or None: ``tokenizer`` is its parsed tokenizer.json, ``word_rule`` the
    quantization rule of its word table (None: not quantized). Checked before training too (xtc.preflight)."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "WordPiece":
        return (f"vocabulary trimming needs a WordPiece tokenizer (BERT, ELECTRA, DistilBERT); this one is "
                f"{model.get('type')}")
    if model.get("unk_token") not in model.get("vocab", {}):
        return "vocabulary trimming needs the tokenizer's unk_token in its vocabulary"
    if word_rule is not None and word_rule.weight_bits is not None and word_rule.granularity == "tensor":
        return ("the word table is quantized with one scale for the whole matrix, which trimming would change; "
                "trim a model whose word-table rule has granularity row")
    return None


def kept_ids(tokenizer: dict, used: set[int], rows: int | None = None) -> list[int]:
    """The old ids a trimmed vocabulary keeps, ascending: ``used``, the special tokens and single characters,
    then, up to ``rows`` ids in all, the lowest other ids but the "[unused0]"-like placeholders (a WordPiece
    vocabulary lists its tokens by frequency: "the", "of", "and" come first after the characters)."""
    model = tokenizer["model"]
    prefix = model.get("continuing_subword_prefix", "##")
    special = {t["id"] for t in tokenizer.get("added_tokens", [])} | {model["vocab"][model["unk_token"]]}
    singles = {i for token, i in model["vocab"].items() if _single_character(token, prefix)}
    keep = set(used) | special | singles
    if rows is not None and rows > len(keep):
        others = sorted(i for token, i in model["vocab"].items()
                        if i not in keep and not (token.startswith("[") and token.endswith("]")))
        keep |= set(others[:rows - len(keep)])
    return sorted(keep)


def _renumbered_tokenizer(tokenizer: dict, new_id: dict[int, int]) -> dict:
    """tokenizer.json with only the kept ids (``new_id``'s keys), renumbered by ``new_id``."""
    out = json.loads(json.dumps(tokenizer))
    out["model"]["vocab"] = {t: new_id[i] for t, i in tokenizer["model"]["vocab"].items() if i in new_id}
    out["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in tokenizer.get("added_tokens", [])]
    post = out.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        for entry in post["special_tokens"].values():
            entry["ids"] = [new_id[i] for i in entry["ids"]]
    elif post.get("type") == "BertProcessing":
        post["sep"][1], post["cls"][1] = new_id[post["sep"][1]], new_id[post["cls"][1]]
    elif post:
        raise XtcError(f"vocabulary trimming does not know the {post.get('type')} post-processor of tokenizer.json")
    if out.get("padding"):
        out["padding"]["pad_id"] = new_id[out["padding"]["pad_id"]]
    return out


def _word_rule(config: dict, table: str):
    """The quantization rule of the word table recorded in a saved config, None when it is not quantized."""
    from xtc.quant.config import recorded_quant_config

    recorded = config.get("xtc_quantization")
    return recorded_quant_config(recorded).rule_for(table) if recorded else None


def trim_vocabulary(src: Path, dst: Path, used: set[int], rows: int | None = None) -> dict:
    """Write into ``dst`` the model folder ``src`` over ``kept_ids(used, rows)``; the other files of ``src`` are
    copied. Returns ``{"kept": rows, "of": rows before}``."""
    import torch  # here, not at the top: the pre-run checks read trim_problem without loading torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    if not all((src / f).is_file() for f in (_TOKENIZER, _CONFIG, _WEIGHTS)):
        raise XtcError(f"{src}: vocabulary trimming needs {_TOKENIZER}, {_CONFIG} and {_WEIGHTS} in the folder")
    tokenizer = json.loads((src / _TOKENIZER).read_text())
    config = json.loads((src / _CONFIG).read_text())
    table = architecture(config["model_type"]).word_embeddings
    problem = trim_problem(tokenizer, _word_rule(config, table))
    if problem:
        raise XtcError(f"{src}: {problem}")
    pad = config.get("pad_token_id")
    keep = kept_ids(tokenizer, set(used) | ({pad} if pad is not None else set()), rows)
    weights = load_file(src / _WEIGHTS)
    name = f"{table}.weight"
    if name not in weights or weights[name].shape[0] != config["vocab_size"]:
        raise XtcError(f"{src}: {_WEIGHTS} has no {name} of {config['vocab_size']} rows")
    weights[name] = weights[name][torch.tensor(keep)].contiguous()
    new_id = {old: new for new, old in enumerate(keep)}
    if config.get("pad_token_id") is not None:
        config["pad_token_id"] = new_id[config["pad_token_id"]]
    before, config["vocab_size"] = config["vocab_size"], len(keep)
    trimmed = _renumbered_tokenizer(tokenizer, new_id)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in (_TOKENIZER, _CONFIG, _WEIGHTS, _VOCAB, _TOKENIZER_CONFIG):
            shutil.copy2(f, dst / f.name)
    save_file(weights, dst / _WEIGHTS, metadata={"format": "pt"})
    (dst / _CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (dst / _TOKENIZER).write_text(json.dumps(trimmed, ensure_ascii=False))
    if (src / _VOCAB).is_file():  # the slow tokenizer's vocabulary: one token per line, line i is id i
        by_id = {i: t for t, i in trimmed["model"]["vocab"].items()} | {t["id"]: t["content"] for t in trimmed["added_tokens"]}
        if sorted(by_id) != list(range(len(keep))):
            raise XtcError(f"{src}: its tokens do not number 0..{len(keep) - 1} after trimming; cannot write {_VOCAB}")
        (dst / _VOCAB).write_text("".join(f"{by_id[i]}\n" for i in range(len(keep))), encoding="utf-8")
    if (src / _TOKENIZER_CONFIG).is_file():  # its added_tokens_decoder is keyed by id
        settings = json.loads((src / _TOKENIZER_CONFIG).read_text())
        if "added_tokens_decoder" in settings:
            settings["added_tokens_decoder"] = {str(new_id[int(i)]): t for i, t in settings["added_tokens_decoder"].items()}
        (dst / _TOKENIZER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return {"kept": len(keep), "of": before}
