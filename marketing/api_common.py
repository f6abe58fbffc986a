"""Shared API plumbing: cursor pagination and the one exception handler that maps domain
errors to HTTP."""

from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from marketing.errors import BatchInvalid, DomainError, RowError


class IdCursorPagination(CursorPagination):
    """Stable, index-backed paging by id: integrations can walk millions of rows without
    OFFSET scans or skipping rows that arrive while they page."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def _flatten(detail, prefix: str | None = None) -> list[dict]:
    if isinstance(detail, dict):
        out: list[dict] = []
        for key, value in detail.items():
            field = key if key != "non_field_errors" else None
            name = f"{prefix}.{field}" if prefix and field else (field or prefix)
            out.extend(_flatten(value, name))
        return out
    if isinstance(detail, list):
        out = []
        for index, item in enumerate(detail):
            if isinstance(item, (dict, list)):
                out.extend(_flatten(item, f"{prefix}[{index}]" if prefix else str(index)))
            else:
                out.extend(_flatten(item, prefix))
        return out
    return [{"row": None, "field": prefix, "message": str(detail)}]


def exception_handler(exc, context):
    if isinstance(exc, BatchInvalid):
        body = {"errors": [error.as_dict() for error in exc.errors], "message": exc.message}
        if exc.total_errors > len(exc.errors):
            body["errors_truncated"] = True
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DomainError):
        return Response({"detail": exc.message}, status=exc.status_code)
    if isinstance(exc, exceptions.ValidationError):
        return Response({"errors": _flatten(exc.detail)}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


def schema_paths_without_trailing_slash(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: every path answers with and without the
    trailing slash; the schema documents the form the README uses, without it."""
    result["paths"] = {
        (path.rstrip("/") if path != "/" else path): item for path, item in result.get("paths", {}).items()
    }
    return result


def is_id(value: str) -> bool:
    """A whole number that fits a BigAutoField. (str.isdigit() alone also takes digits
    such as "²", which int() refuses.)"""
    return value.isascii() and value.isdigit() and int(value) < 2**63


def query_flag(request, name: str) -> bool:
    """A true/false query parameter (default false); anything else is a 400 naming it."""
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise BatchInvalid([RowError(row=None, field=name, message="must be true or false")])
    return value in ("true", "1")


def query_id(request, name: str) -> int | None:
    """An optional id query parameter; not a whole number >= 1 is a 400 naming it."""
    value = request.query_params.get(name)
    if value is None:
        return None
    if not is_id(value) or int(value) < 1:
        raise BatchInvalid([RowError(row=None, field=name, message="must be an id (a whole number >= 1)")])
    return int(value)
