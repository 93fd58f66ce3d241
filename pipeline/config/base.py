"""What every section of the schema shares, kept apart so each section's module can stand on it
without importing the others: a section refuses unknown keys (a typo is an error, not a setting
silently ignored), is frozen (a loaded config is the experiment) and strict (no coercion)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME = r"^[A-Za-z0-9._=-]+$"  # = for sweeps' names: x--backbone=a--seed=1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
