"""The base of every validated config: unknown keys fail, values are frozen once validated."""

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
