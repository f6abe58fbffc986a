"""Domain errors. Services raise these; the API's exception handler maps them to HTTP
with a clear message, so bad input never becomes a 500."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RowError:
    """One problem in one row of a batch. `row` is the 0-based index in the request's
    list (the CSV importer shows file line numbers instead)."""

    row: int | None
    field: str | None
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BatchInvalid(DomainError):
    """A batch with bad rows: nothing of it was written."""

    def __init__(self, errors: list[RowError], total_errors: int | None = None):
        self.errors = errors
        self.total_errors = total_errors if total_errors is not None else len(errors)
        super().__init__(f"{self.total_errors} invalid row(s); nothing was written")


class BatchTooLarge(DomainError):
    status_code = 413


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409
