"""Base class of every contract: frozen, strict about unknown fields, typed and versioned."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A message on some wire. ``TYPE`` names it in the registry; ``VERSION`` is its schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
