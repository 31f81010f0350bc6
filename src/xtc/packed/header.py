"""The schema of the ``xtc_header`` metadata (SPEC.md, "Metadata"): every field validated on read,
so a foreign or corrupted value is one clear error instead of a failure deep in the runtime."""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from xtc.packed.codecs import CODECS, LOW_BIT
from xtc.packed.layout import TOKENIZER_FILES
from xtc.schema import Schema

MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**34  # 16 G values: far above any encoder, below sizes whose products overflow


class TensorEntry(Schema):
    """One logical tensor (its name in the Hugging Face state dict)."""

    encoding: Literal[tuple(CODECS)]  # type: ignore[valid-type]
    shape: list[int] = Field(min_length=1, max_length=4)
    bits: Literal[1, 2, 8] | None = None
    granularity: Literal["tensor", "row", "group"] | None = None
    group_size: int | None = Field(None, gt=0, le=MAX_DIM)
    act_bits: Literal[8] | None = None  # a quantized Linear's input activations (8-bit per token); None: embedding
    act_mode: Literal["dynamic"] | None = None

    @field_validator("shape")
    @classmethod
    def _sizes(cls, shape: list[int]) -> list[int]:
        if not all(1 <= d <= MAX_DIM for d in shape):
            raise ValueError(f"dimensions must be 1..{MAX_DIM}")
        product = 1
        for d in shape:
            product *= d
        if product > MAX_ELEMENTS:
            raise ValueError(f"more than {MAX_ELEMENTS} values")
        return shape

    @model_validator(mode="after")
    def _fields_of_encoding(self):
        if self.encoding in LOW_BIT:
            if self.bits is None or self.granularity is None:
                raise ValueError(f"a {self.encoding} tensor records bits and granularity")
            if (self.encoding == "binary") != (self.bits == 1):
                raise ValueError(f"{self.bits}-bit weights are not stored as {self.encoding}")
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError("group_size goes with granularity 'group', and only with it")
        if self.encoding not in LOW_BIT and (self.act_bits is not None or self.granularity == "group"):
            raise ValueError(f"a {self.encoding} tensor has no activation bits or groups")
        return self


class Header(Schema):
    architecture: dict
    quantization: dict
    tensors: dict[str, TensorEntry]
    tokenizer_sha256: dict[str, str] = {}
    tensor_sha256: dict[str, str] = Field({}, description="SHA-256 of each stored tensor's bytes (version 2)")

    @field_validator("tokenizer_sha256")
    @classmethod
    def _tokenizer_files(cls, digests: dict[str, str]) -> dict[str, str]:
        foreign = sorted(set(digests) - set(TOKENIZER_FILES))
        if foreign:
            raise ValueError(f"{foreign[0]!r} is not a tokenizer file ({', '.join(TOKENIZER_FILES)})")
        return digests
