"""Validated quantization configs: which modules get which quantizer, by name pattern.

A ``QuantConfig`` is an ordered list of ``QuantRule``: a regular expression over
full module names (``re.fullmatch``) and the ``QuantSpec`` for the nn.Linear /
nn.Embedding modules it matches; the first matching rule wins. Unknown keys and
bad values fail at construction, naming the field, the value and the choices.

The presets ``w1a8`` / ``w2a8`` are the reference XTC configuration (XTC paper, arXiv:2206.01859),
with patterns generated from ``xtc.arch.ARCHITECTURES``
so that they fit every supported architecture. ``w1a8-word2`` is ``w1a8`` with a 2-bit word table:
the ablation's largest single gain on 1-bit STS-B and CoLA (benchmarks/study/ablation-fp32).

This module imports no torch, so configs can be validated cheaply (CLI).
"""

import re
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from xtc.arch import ARCHITECTURES
from xtc.errors import XtcError, format_validation_error
from xtc.schema import Schema

Granularity = Literal["tensor", "row", "group"]
ActMode = Literal["dynamic", "static"]

# The Linear layers of a transformer layer, by their role names in ``Architecture``.
LINEAR_ROLES = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")


class QuantSpec(Schema):
    """How one module is quantized; the defaults keep it in full precision."""

    weight_bits: int | None = Field(
        None, description="weight bits: 1 (binary, BWN), 2 (ternary, TWN), 3..8 (symmetric); None keeps full precision"
    )
    granularity: Granularity = Field(
        "tensor",
        description="weights sharing one scale: tensor (the whole matrix), row (one output or embedding row), "
        "group (group_size consecutive weights of a row)",
    )
    group_size: int | None = Field(
        None, gt=0, validate_default=True, description="weights per scale along a row, with granularity 'group'"
    )
    act_bits: int | None = Field(
        None,
        description="bits of a Linear's input activations (symmetric, 2..8); None keeps them in full precision; "
        "embeddings have none and ignore it",
    )
    act_mode: ActMode = Field(
        "dynamic",
        description="dynamic: one scale per token from its max |x|; static: one range per layer, "
        "an EMA (momentum 0.95) of the batch max |x| in training, frozen in eval",
    )

    @field_validator("weight_bits")
    @classmethod
    def _weight_bits(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 8:
            raise ValueError("must be one of 1 (binary), 2 (ternary), 3..8 (symmetric) or None (full precision)")
        return value

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        granularity = info.data.get("granularity")
        if granularity == "group" and value is None:
            raise ValueError("group_size is required with granularity 'group'")
        if granularity in ("tensor", "row") and value is not None:
            raise ValueError(f"group_size is only used with granularity 'group' (granularity is {granularity!r})")
        return value

    @field_validator("act_bits")
    @classmethod
    def _act_bits(cls, value: int | None) -> int | None:
        if value is not None and not 2 <= value <= 8:
            raise ValueError("must be one of 2..8 or None (full precision)")
        return value

    @field_validator("act_mode")
    @classmethod
    def _act_mode(cls, value: str, info: ValidationInfo) -> str:
        if value == "static" and info.data.get("act_bits") is None:
            raise ValueError("act_mode 'static' needs act_bits")
        return value


class QuantRule(QuantSpec):
    """A ``QuantSpec`` for the modules whose full name matches ``pattern``."""

    pattern: str = Field(description=r"regular expression matched against full module names (re.fullmatch), "
                         r"e.g. 'bert\.encoder\.layer\.\d+\.attention\.self\.query'")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"pattern is not a valid regular expression: {e}") from None
        return value


Kept = Literal["fp16", "fp32"]


class QuantConfig(Schema):
    """Which nn.Linear / nn.Embedding modules are quantized, and how; and how the rest is stored."""

    rules: list[QuantRule] = Field(
        min_length=1, description="tried in order; the first rule whose pattern matches a module's name decides"
    )
    kept: Kept = Field(
        "fp16", description="precision of every tensor no rule quantizes (LayerNorms, biases, other embeddings, "
        "head): fp16 rounds them to float16 in every forward pass (straight-through in training), so the "
        "trained and evaluated model is exactly the packed file, which stores them in float16; fp32 keeps them"
    )

    def rule_for(self, module_name: str) -> QuantRule | None:
        """The rule deciding ``module_name`` (a full module name): the first whose pattern fullmatches it."""
        return next((r for r in self.rules if re.fullmatch(r.pattern, module_name)), None)


def _alternatives(names) -> str:
    return "|".join(dict.fromkeys(re.escape(n) for n in names if n))


def _reference(bits: int, word_bits: int | None = None) -> QuantConfig:
    """The XTC paper: Q/K/V, attention output, FFN in/out of every layer at ``bits`` (one scale per matrix) with
    8-bit dynamic per-token inputs; word embeddings at ``word_bits`` (default ``bits``), one scale per row.
    Beyond the paper, the two largest of the other tensors are stored (and trained) as 8-bit rows: the
    position embeddings and the pooler's dense layer (weights only); everything else is kept in float16."""
    archs = ARCHITECTURES.values()
    linears = "|".join(dict.fromkeys(
        rf"{re.escape(a.layers)}\.\d+\.(?:{'|'.join(re.escape(getattr(a, role)) for role in LINEAR_ROLES)})"
        for a in archs
    ))
    return QuantConfig(rules=[
        QuantRule(pattern=linears, weight_bits=bits, granularity="tensor", act_bits=8, act_mode="dynamic"),
        QuantRule(pattern=_alternatives(a.word_embeddings for a in archs), weight_bits=word_bits or bits,
                  granularity="row"),
        QuantRule(pattern=_alternatives(a.position_embeddings for a in archs), weight_bits=8, granularity="row"),
        QuantRule(pattern=_alternatives(a.pooler for a in archs), weight_bits=8, granularity="row"),
    ], kept="fp16")


PRESETS: dict[str, QuantConfig] = {"w1a8": _reference(1), "w2a8": _reference(2), "w1a8-word2": _reference(1, 2)}


def recorded_quant_config(recorded: dict) -> QuantConfig:
    """A config as a saved folder or packed file records it: those written before ``kept`` was recorded
    were trained with float32 kept tensors."""
    return get_quant_config({"kept": "fp32", **recorded})


def get_quant_config(name_or_config: str | dict | QuantConfig) -> QuantConfig:
    """A preset name (case-insensitive), a dict (e.g. a saved ``model_dump()``) or a QuantConfig -> QuantConfig."""
    if isinstance(name_or_config, QuantConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        try:
            return QuantConfig.model_validate(name_or_config)
        except ValidationError as e:
            raise XtcError(f"invalid quantization config: {format_validation_error(e, flags=False)}") from None
    if name_or_config.lower() not in PRESETS:
        raise XtcError(f"unknown quantization preset {name_or_config!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name_or_config.lower()]
