"""What the ULIM and UMI demos' results have in common: one seed's tables and training records,
and the seeds' runs with the claims over them (written as JSON by `asdict`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Table = dict[str, dict[str, float]]  # row -> cut-off (or column) -> value


@dataclass
class SeedTables:
    """What one seed measured: its data summary, its tables and each model's training record."""

    seed: int
    data: dict[str, Any]
    tables: dict[str, Table] = field(default_factory=dict)
    training: dict[str, dict[str, float]] = field(default_factory=dict)


SeedT = TypeVar("SeedT", bound=SeedTables)


@dataclass
class SeedsRun(Generic[SeedT]):
    """The seeds' runs, the claims over them, the run's settings and its wall-clock seconds."""

    config: dict[str, Any]
    seeds: list[SeedT]
    claims: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def values(self, table: str, row: str, column: str) -> list[float]:
        """`table`'s entry at (`row`, `column`) over the seeds."""
        return [seed.tables[table][row][column] for seed in self.seeds]
