"""Customers as CSV, for the admin: parse an uploaded file into the rows the bulk ingest
service takes, and stream a queryset of customers out in the same shape, so an export
re-imports cleanly.

The file format:
- a header row; columns named like the bulk API's fields (`external_id`, `email`, `phone`,
  `first_name`, `last_name`, `country`, `timezone`, `locale`, `email_opt_in`,
  `sms_opt_in`, `push_opt_in`, `unsubscribed`) and `attributes.<name>` for attributes;
  only `external_id` is required; comma, semicolon (European Excel) or tab separated;
- UTF-8, with or without a byte order mark (Excel's "CSV UTF-8" writes one), or UTF-16
  with its byte order mark (Excel's "Unicode text");
- an empty cell leaves the field as it is (it is omitted from the row);
- booleans: true/false, 1/0, yes/no (any case);
- an attribute cell holding a JSON literal (`42`, `4.5`, `true`, `null`, `"42"`, `[1,2]`,
  `{"a":1}`) is read as that JSON value, anything else as text. `null` removes the
  attribute (the bulk API's rule). The export writes text that would be misread that way
  (`"42"`, an empty string, surrounding spaces) JSON-quoted, so every value round-trips;
- a cell that a spreadsheet would run as a formula (starting with = + - @, a tab or a
  carriage return) is exported with a leading apostrophe, which the import removes again.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from marketing.errors import RowError
from marketing.ingest.validate import CONSENT_FIELDS, CUSTOMER_TEXT_KEYS

CUSTOMER_COLUMNS = ("external_id", *CUSTOMER_TEXT_KEYS, *CONSENT_FIELDS, "unsubscribed")
BOOLEAN_COLUMNS = frozenset({"email_opt_in", "sms_opt_in", "push_opt_in", "unsubscribed"})
# The columns read straight from Customer fields; `unsubscribed` comes from unsubscribed_at.
MODEL_COLUMNS = CUSTOMER_COLUMNS[:-1]
ATTRIBUTE_PREFIX = "attributes."
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})
DELIMITERS = (",", ";", "\t")

# One admin request validates and writes the whole file in one transaction: beyond this,
# integrations should use the bulk API in batches.
MAX_IMPORT_ROWS = 100_000
MAX_IMPORT_BYTES = 64 * 1024 * 1024

# A spreadsheet runs a cell starting with one of these as a formula ("CSV injection").
_FORMULA_START = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED_FORMULA = re.compile(r"^'+[=+\-@\t\r]")
_FORMULA_FIRST = frozenset("'=+-@\t\r")
# The first character of every JSON text json.loads accepts (after surrounding spaces).
_JSON_START = frozenset('-0123456789"[{tfn')


class CsvFileError(Exception):
    """The upload as a whole cannot be read as a customers CSV (encoding, format,
    header). Per-row problems are RowErrors instead."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class ParsedCsv:
    """`rows[i]` came from CSV line `lines[i]` (the header is line 1). `errors` name CSV
    line numbers in `row`."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def attribute_names(self) -> list[str]:
        return [c[len(ATTRIBUTE_PREFIX) :] for c in self.columns if c.startswith(ATTRIBUTE_PREFIX)]


# --- import -------------------------------------------------------------------------------


def decode_upload(data: bytes) -> str:
    """The text of an upload, or a CsvFileError that tells a marketer how to fix it."""
    if not data.strip():
        raise CsvFileError("The file is empty.")
    if data.startswith(b"PK\x03\x04"):
        raise CsvFileError(
            "This is an Excel workbook or another zip file, not a CSV file. In Excel, use "
            "File > Save As > CSV UTF-8 (Comma delimited) and upload that."
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"  # strips Excel's byte order mark when there is one
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvFileError(
            f"The file is not UTF-8 text (the first bad byte is on line {line}). Save it as "
            "CSV UTF-8 (in Excel: File > Save As > CSV UTF-8) and upload it again."
        ) from None
    if "\x00" in text:
        raise CsvFileError("The file contains binary data (NUL bytes); it is not a CSV text file.")
    return text


def _header_columns(header: list[str]) -> list[str]:
    """Canonical column names; '' for a column without a name."""
    columns: list[str] = []
    unknown: list[str] = []
    for raw in header:
        name = raw.strip()
        lowered = name.lower()
        if not name:
            columns.append("")
        elif lowered in CUSTOMER_COLUMNS:
            columns.append(lowered)
        elif lowered.startswith(ATTRIBUTE_PREFIX) and name[len(ATTRIBUTE_PREFIX) :].strip():
            # Attribute names keep their case: they are keys of a JSON object.
            columns.append(ATTRIBUTE_PREFIX + name[len(ATTRIBUTE_PREFIX) :].strip())
        else:
            unknown.append(name)
            columns.append(name)
    if "external_id" not in columns:
        raise CsvFileError(
            "The header row has no external_id column. The first row must name the columns, "
            "e.g. external_id,email,first_name."
        )
    if unknown:
        raise CsvFileError(
            f"Unknown column(s): {', '.join(unknown)}. Columns are {', '.join(CUSTOMER_COLUMNS)} "
            "and attributes.<name> for attributes."
        )
    duplicates = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicates:
        raise CsvFileError(f"Column(s) appear more than once: {', '.join(duplicates)}.")
    return columns


def _pick_delimiter(first_line: str) -> str:
    """The separator of the header row: the one that makes `external_id` a column of its
    own (comma first)."""
    for delimiter in DELIMITERS:
        names = [name.strip().strip('"').lower() for name in first_line.split(delimiter)]
        if "external_id" in names:
            return delimiter
    return ","


def parse_bool(value: str) -> bool | None:
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    return None


def _unescape_formula(value: str) -> str:
    return value[1:] if _ESCAPED_FORMULA.match(value) else value


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON


def _json_literal(value: str) -> tuple[bool, Any]:
    """(True, the JSON value) when the text is a JSON literal, else (False, None)."""
    if not value or value[0] not in _JSON_START:
        return False, None
    try:
        return True, json.loads(value, parse_constant=_reject_constant)
    except ValueError:
        return False, None


def parse_attribute(value: str) -> Any:
    is_json, parsed = _json_literal(value)
    return parsed if is_json else value


def parse_customers_csv(data: bytes) -> ParsedCsv:
    """Parse an uploaded customers CSV into bulk-ingest rows. File-level problems raise
    CsvFileError; cell problems (a bad boolean) become RowErrors on their CSV line, and the
    row is kept without that cell so the ingest validation can report the rest of it."""
    if len(data) > MAX_IMPORT_BYTES:
        raise CsvFileError(
            f"The file is {len(data):,} bytes; the limit is {MAX_IMPORT_BYTES:,}. Split it, or use the bulk API."
        )
    text = decode_upload(data)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_pick_delimiter(first_line), strict=True)
    try:
        header: list[str] | None = None
        while header is None:
            record = next(reader, None)
            if record is None:
                raise CsvFileError("The file is empty.")
            if any(cell.strip() for cell in record):
                header = record
        columns = _header_columns(header)
        parsed = ParsedCsv(columns=[c for c in columns if c])
        width = len(columns)
        line = reader.line_num + 1  # where the next record starts
        for record in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue  # blank lines (and Excel's trailing ";;;;" rows) are not customers
            if len(parsed.rows) >= MAX_IMPORT_ROWS:
                raise CsvFileError(
                    f"The file has more than {MAX_IMPORT_ROWS:,} customers. Split it, or use the bulk API."
                )
            parsed.rows.append(_parse_record(record, columns, width, start, parsed.errors))
            parsed.lines.append(start)
    except csv.Error as exc:
        raise CsvFileError(f"This is not a well-formed CSV file (line {reader.line_num}: {exc}).") from None
    if not parsed.rows:
        raise CsvFileError("The file has a header row but no customers.")
    return parsed


def _parse_record(record: list[str], columns: list[str], width: int, line: int, errors: list[RowError]) -> dict:
    row: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if len(record) > width and any(cell.strip() for cell in record[width:]):
        errors.append(RowError(line, None, f"has {len(record)} cells but the header names {width} columns"))
    for column, raw in zip(columns, record, strict=False):
        value = raw.strip()
        if not value:
            continue  # an empty cell leaves the field unchanged
        if not column:
            errors.append(RowError(line, None, f"has a value ({value[:40]!r}) in a column without a header name"))
        elif column in BOOLEAN_COLUMNS:
            flag = parse_bool(value)
            if flag is None:
                errors.append(RowError(line, column, f"{value[:40]!r} is not a boolean: use true/false, 1/0 or yes/no"))
            else:
                row[column] = flag
        elif column.startswith(ATTRIBUTE_PREFIX):
            attributes[column[len(ATTRIBUTE_PREFIX) :]] = parse_attribute(_unescape_formula(value))
        else:
            row[column] = _unescape_formula(value)
    if attributes:
        row["attributes"] = attributes
    return row


def import_batches(rows: list[dict[str, Any]], size: int) -> list[list[int]]:
    """Split a file's rows into ingest batches of at most `size`, as lists of row indices.
    All rows of one customer go into the same batch (in file order), where the ingest
    merges them in order and counts the customer once: the outcome and the created/updated
    counts then do not depend on where a batch boundary falls. Only a customer with more
    than `size` rows in one file spans batches."""
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(str(row.get("external_id")), []).append(index)
    batches: list[list[int]] = []
    current: list[int] = []
    for group in groups.values():
        if current and len(current) + len(group) > size:
            batches.append(current)
            current = []
        while len(group) > size:
            batches.append(group[:size])
            group = group[size:]
        current.extend(group)
    if current:
        batches.append(current)
    return batches


# --- export -------------------------------------------------------------------------------


def customer_attribute_keys(queryset: QuerySet) -> list[str]:
    """Every attribute key used by the customers of `queryset`, sorted: one pass in SQL
    over the keys only (jsonb_object_keys on PostgreSQL, json_each on SQLite), so the
    export does not load every row twice."""
    inner = queryset.order_by().values("attributes")
    sql, params = inner.query.sql_with_params()
    vendor = connections[queryset.db].vendor
    if vendor == "postgresql":
        query = (
            f"SELECT DISTINCT jsonb_object_keys(c.attributes) FROM ({sql}) c "
            "WHERE jsonb_typeof(c.attributes) = 'object'"
        )
    elif vendor == "sqlite":
        query = (
            f"SELECT DISTINCT j.key FROM ({sql}) c, json_each(c.attributes) j WHERE json_type(c.attributes) = 'object'"
        )
    else:  # any other database: one extra pass over the attributes column alone
        keys: set[str] = set()
        for attributes in inner.values_list("attributes", flat=True).iterator(chunk_size=5000):
            if isinstance(attributes, dict):
                keys.update(attributes)
        return sorted(keys)
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(query, params)
        return sorted(key for (key,) in cursor.fetchall())


def _escape_formula(value: str) -> str:
    if value and value[0] in _FORMULA_FIRST and _FORMULA_START.match(value):
        return "'" + value
    return value


_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}


def format_attribute(value: Any) -> str:
    """The cell text of one attribute value; parse_attribute(format_attribute(v)) == v."""
    if isinstance(value, str):
        if value == "" or value != value.strip() or _json_literal(value)[0]:
            return json.dumps(value, ensure_ascii=False)
        return value
    if value is True or value is False or value is None:
        return _JSON_CONSTANTS[value]
    if type(value) is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_TEXT_COLUMNS = len(MODEL_COLUMNS) - 3  # external_id … locale, then the three opt-ins


def _customer_cells(values: tuple, attribute_keys: list[str]) -> list[str]:
    cells = [_escape_formula(value) for value in values[:_TEXT_COLUMNS]]
    email_opt_in, sms_opt_in, push_opt_in, unsubscribed_at, attributes = values[_TEXT_COLUMNS:]
    cells += [
        "true" if email_opt_in else "false",
        "true" if sms_opt_in else "false",
        "true" if push_opt_in else "false",
        "false" if unsubscribed_at is None else "true",
    ]
    if not isinstance(attributes, dict):
        attributes = {}
    for key in attribute_keys:
        cells.append(_escape_formula(format_attribute(attributes[key])) if key in attributes else "")
    return cells


class _Line:
    """A file-like object for csv.writer that hands back what it was given."""

    def write(self, value: str) -> str:
        return value


def customers_csv_lines(queryset: QuerySet, chunk_size: int = 2000) -> Iterator[str]:
    """The CSV lines (header first) of `queryset`'s customers in id order, read with a
    server-side cursor `chunk_size` rows at a time."""
    attribute_keys = customer_attribute_keys(queryset)
    writer = csv.writer(_Line())
    yield writer.writerow([*CUSTOMER_COLUMNS, *(ATTRIBUTE_PREFIX + key for key in attribute_keys)])
    rows = queryset.order_by("pk").values_list(*MODEL_COLUMNS, "unsubscribed_at", "attributes")
    for values in rows.iterator(chunk_size=chunk_size):
        yield writer.writerow(_customer_cells(values, attribute_keys))


def customers_csv_stream(queryset: QuerySet, chunk_size: int = 2000) -> Iterator[bytes]:
    """UTF-8 bytes of the export with a byte order mark (so Excel reads the accents right;
    the import strips it), in pieces of about 64 KiB for a StreamingHttpResponse."""
    yield codecs.BOM_UTF8
    yield from _batched_bytes(customers_csv_lines(queryset, chunk_size=chunk_size))


def _batched_bytes(lines: Iterable[str], size: int = 64 * 1024) -> Iterator[bytes]:
    buffer: list[str] = []
    buffered = 0
    for line in lines:
        buffer.append(line)
        buffered += len(line)
        if buffered >= size:
            yield "".join(buffer).encode()
            buffer, buffered = [], 0
    if buffer:
        yield "".join(buffer).encode()
