from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marketing.errors import RowError


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    customers_created: int


def customers_validate(rows: list[Any]) -> tuple[list[dict], list[RowError]]:
    raise NotImplementedError


def customers_bulk_upsert(rows: list[Any], *, source: str = "api") -> UpsertResult:
    raise NotImplementedError


def touchpoints_bulk_insert(rows: list[Any], *, source: str = "api") -> InsertResult:
    raise NotImplementedError


def products_bulk_upsert(rows: list[Any]) -> UpsertResult:
    raise NotImplementedError
