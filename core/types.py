"""Base class for sysplan's typed data (house style 3: frozen, extra="forbid")."""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, validated record; unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
