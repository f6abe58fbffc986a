"""The rule language of rules segments: a JSON tree validated with JSON-Pointer errors and
compiled to one Django `Q` over `Customer`, so a segment is one SQL statement whatever its
size (Exists()/scalar subqueries, never a Python loop over customers).

The tree
--------
- `{"all": [node, ...]}`, `{"any": [node, ...]}` (at least one node each), `{"not": node}`.
- Field leaves `{"field": F, "op": OP, "value": V}`:
  - model fields: text (external_id, email, phone, first_name, last_name, country,
    timezone, locale), date-times (created_at, updated_at, last_seen_at) and the boolean
    is_stub. Values are checked against the field's type when the tree is saved. Text
    `eq`/`in`/`gt`… are exact and case-sensitive; `contains` is a case-insensitive
    substring. Date-times take ISO 8601 with an offset, or a date (the start of that day
    in the reporting timezone; as the upper bound of `between`, its end). `exists` (value
    true/false): text is non-empty, a date-time is set.
  - `attributes.<key>` (the customer's JSON attributes, one level): comparisons are typed
    by the JSON type of `value`. A number matches only JSON numbers, compared numerically;
    a string only JSON strings; a boolean only JSON booleans. So `2` does NOT equal `"2"`.
    A customer whose attribute is missing or of another type does not match (`eq`, `gt`,
    `in`, `between`, `contains`…): never an error at rebuild time. `ne` and `not_in` are
    the exact complements of `eq` and `in` (a missing or differently typed attribute
    matches them). `contains`: for a JSON string attribute, a case-insensitive substring
    (value a string); for a JSON array attribute, an element equal (typed) to the value.
    `exists` tests key presence (a key holding JSON null exists).
  - ops: eq, ne, in, not_in (non-empty list of one type), gt, gte, lt, lte, contains,
    exists (true/false), between ([low, high], inclusive, low <= high).
- Event leaves `{"event": {"kind", "channel"?, "campaign_id"?, "sku"?, "category"?,
  "within_days"? | "between"?, "count"? , "revenue"?}}`: the customer has touchpoints of
  that kind matching the filters in the window (within_days: the last N days before
  `now`; between: [from, to] inclusive, dates in the reporting timezone), with `count`
  (default `{"gte": 1}`) and/or `revenue` (sum of the matching touchpoints' revenue) as a
  comparison object such as `{"gte": 2, "lt": 5}`. For purchase and refund, count is the
  number of distinct orders (a purchase is one touchpoint per order line). `category`
  keeps touchpoints whose sku is a product of that category. "Has not done X in N days"
  is `{"not": {"event": {"kind": X, "within_days": N}}}` (or `"count": {"eq": 0}`).
- `{"rfm": {"recency_days"|"frequency"|"monetary"|"r_score"|"f_score"|"m_score": {op: n},
  "group": "champions"}}` over CustomerRFM; customers without a row or with null values
  do not match.
- `{"consent": "email"|"sms"|"push"}`: opted in to that channel and not unsubscribed.
- `{"segment": id}`: member of another segment. A rules segment's tree is compiled inline
  (cycles refused); any other kind (cluster, affinity…) counts its stored memberships as of
  its last rebuild.
- More leaves (cluster, scores) register themselves with `register_leaf`.

Erased (GDPR) customers never match any segment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import BooleanField, Count, Exists, Expression, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from campaigns.models import Segment, SegmentMembership
from marketing.errors import DomainError
from marketing.models import ORDER_KINDS, Customer, CustomerRFM, Product, Touchpoint
from marketing.rfm import RFM_GROUPS

# --- errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule tree; `path` is a JSON Pointer (RFC 6901) into the tree."""

    path: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


class RuleInvalid(DomainError):
    """A rule tree that cannot be compiled; `errors` name every problem with its path."""

    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__(f"The rule tree is invalid: {len(errors)} problem(s).")


def _ptr(path: str, *parts: str | int) -> str:
    for part in parts:
        path += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return path


# --- field catalogue ---------------------------------------------------------------------

TEXT_FIELDS = frozenset({"external_id", "email", "phone", "first_name", "last_name", "country", "timezone", "locale"})
DATETIME_FIELDS = frozenset({"created_at", "updated_at", "last_seen_at"})
NULLABLE_FIELDS = frozenset({"last_seen_at"})
BOOLEAN_FIELDS = frozenset({"is_stub"})
MODEL_FIELDS = TEXT_FIELDS | DATETIME_FIELDS | BOOLEAN_FIELDS
ATTRIBUTE_PREFIX = "attributes."
ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")

OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists", "between")
ORDER_OPS = frozenset({"gt", "gte", "lt", "lte", "between"})
COMPARISON_OPS = ("eq", "gt", "gte", "lt", "lte")
CONSENT_CHANNELS = ("email", "sms", "push")
RFM_MEASURES = {
    "recency_days": "int",
    "frequency": "int",
    "monetary": "number",
    "r_score": "score",
    "f_score": "score",
    "m_score": "score",
}
MAX_WITHIN_DAYS = 36500
MAX_DEPTH = 32

# --- context and registry --------------------------------------------------------------


@dataclass
class Context:
    """What compiling and validating need besides the tree: the instant that relative
    windows count back from, and the chain of segments being expanded (for cycles)."""

    now: datetime
    segment_chain: tuple[int, ...] = ()
    # id -> (kind, definition), so one compile loads each referenced segment once
    segments: dict[int, tuple[str, Any] | None] = field(default_factory=dict)

    def load_segment(self, segment_id: int) -> tuple[str, Any] | None:
        if segment_id not in self.segments:
            row = Segment.objects.filter(pk=segment_id).values_list("kind", "definition").first()
            self.segments[segment_id] = (row[0], row[1]) if row else None
        return self.segments[segment_id]


Validator = Callable[[Any, str, Context], list[RuleError]]
Compiler = Callable[[Any, Context], Q]


@dataclass(frozen=True)
class Leaf:
    """A leaf type `{name: body}`: `validate(body, path_of_body, ctx)` returns the
    problems; `compile(body, ctx)` returns a Q over Customer (only called on valid
    bodies). `schema` is the JSON Schema of the body, published in the API docs."""

    name: str
    validate: Validator
    compile: Compiler
    schema: dict


LEAVES: dict[str, Leaf] = {}


def register_leaf(name: str, validate: Validator, compile: Compiler, schema: dict | None = None) -> None:
    """The hook for model outputs: e.g. mlcore glue registers {"cluster": …} or
    {"score": …} at startup (AppConfig.ready)."""
    if name in ("all", "any", "not", "field"):
        raise ValueError(f"{name!r} is a built-in node")
    LEAVES[name] = Leaf(name, validate, compile, schema or {})


# --- value helpers -------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _reporting_tz() -> ZoneInfo:
    return ZoneInfo(settings.REPORTING_TIMEZONE)


def parse_instant(value: Any, end_of_day: bool = False) -> datetime | None:
    """An aware datetime from ISO 8601 with an offset, or a date (start of that day in the
    reporting timezone, or the start of the next day when `end_of_day`); None if bad."""
    if not isinstance(value, str):
        return None
    if not _is_date_only(value):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            return None
        return parsed if parsed is not None and parsed.tzinfo is not None else None
    try:
        day = parse_date(value)
    except ValueError:
        return None
    if day is None:
        return None
    if end_of_day:
        day = day + timedelta(days=1)
    return datetime.combine(day, time.min, tzinfo=_reporting_tz())


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _is_date_only(value: Any) -> bool:
    return isinstance(value, str) and DATE_RE.match(value) is not None


# --- validation ------------------------------------------------------------------------------


def validate_definition(tree: Any, *, segment_id: int | None = None) -> list[RuleError]:
    """Every problem in `tree`, each with its JSON Pointer; [] when it compiles.
    `segment_id` is the segment being saved, so a reference back to it is a cycle."""
    ctx = Context(now=timezone.now(), segment_chain=(segment_id,) if segment_id is not None else ())
    return _validate_node(tree, "", ctx, 0)


def _validate_node(node: Any, path: str, ctx: Context, depth: int) -> list[RuleError]:
    if depth > MAX_DEPTH:
        return [RuleError(path, f"nesting deeper than {MAX_DEPTH} levels")]
    if not isinstance(node, dict):
        return [RuleError(path, "must be an object (a condition)")]
    if "field" in node:
        return _validate_field(node, path)
    if len(node) != 1:
        keys = ", ".join(sorted(node)) or "none"
        return [RuleError(path, f"must have exactly one key naming the condition, got: {keys}")]
    ((key, body),) = node.items()
    sub = _ptr(path, key)
    if key in ("all", "any"):
        if not isinstance(body, list) or not body:
            return [RuleError(sub, "must be a non-empty list of conditions")]
        errors: list[RuleError] = []
        for index, child in enumerate(body):
            errors += _validate_node(child, _ptr(sub, index), ctx, depth + 1)
        return errors
    if key == "not":
        return _validate_node(body, sub, ctx, depth + 1)
    leaf = LEAVES.get(key)
    if leaf is None:
        known = ", ".join(["all", "any", "not", "field", *sorted(LEAVES)])
        return [RuleError(path, f"unknown condition {key!r}; expected one of: {known}")]
    return leaf.validate(body, sub, ctx)


def _field_kind(name: str) -> str | None:
    if name in TEXT_FIELDS:
        return "text"
    if name in DATETIME_FIELDS:
        return "datetime"
    if name in BOOLEAN_FIELDS:
        return "boolean"
    if name.startswith(ATTRIBUTE_PREFIX):
        return "attribute"
    return None


def _validate_field(node: dict, path: str) -> list[RuleError]:
    extra = sorted(set(node) - {"field", "op", "value"})
    if extra:
        return [RuleError(_ptr(path, extra[0]), "unknown key; a field condition has field, op and value")]
    name = node["field"]
    if not isinstance(name, str) or _field_kind(name) is None:
        known = ", ".join(sorted(MODEL_FIELDS))
        return [RuleError(_ptr(path, "field"), f"unknown field {name!r}; expected attributes.<key> or one of: {known}")]
    kind = _field_kind(name)
    if kind == "attribute" and not ATTRIBUTE_KEY_RE.match(name[len(ATTRIBUTE_PREFIX) :]):
        return [
            RuleError(
                _ptr(path, "field"),
                "an attribute key is 1-64 letters, digits, '_' or '-' (one level, no dots)",
            )
        ]
    op = node.get("op")
    if op not in OPS:
        return [RuleError(_ptr(path, "op"), f"op must be one of: {', '.join(OPS)}")]
    if "value" not in node:
        return [RuleError(_ptr(path, "value"), "is required")]
    value = node["value"]
    vpath = _ptr(path, "value")
    if op == "exists":
        return [] if isinstance(value, bool) else [RuleError(vpath, "exists takes true or false")]
    if kind == "boolean":
        if op not in ("eq", "ne"):
            return [RuleError(_ptr(path, "op"), f"{name} is a boolean field: use eq, ne or exists")]
        return [] if isinstance(value, bool) else [RuleError(vpath, "must be true or false")]
    if kind == "datetime" and op == "contains":
        return [RuleError(_ptr(path, "op"), f"contains does not apply to the date-time field {name}")]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return [RuleError(vpath, f"{op} takes a non-empty list")]
        items = value
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            return [RuleError(vpath, "between takes a list of two values [low, high]")]
        items = value
    else:
        items = [value]
    item_paths = [_ptr(vpath, i) for i in range(len(items))] if items is value else [vpath]

    errors: list[RuleError] = []
    if kind == "text":
        for item, ipath in zip(items, item_paths, strict=True):
            if not isinstance(item, str):
                errors.append(RuleError(ipath, f"{name} is a text field: expected a string"))
    elif kind == "datetime":
        for index, (item, ipath) in enumerate(zip(items, item_paths, strict=True)):
            if parse_instant(item, end_of_day=op == "between" and index == 1) is None:
                errors.append(
                    RuleError(ipath, f"{name} is a date-time: expected ISO 8601 with a UTC offset, or a date")
                )
    else:  # attribute: typed by the JSON value
        types = [_json_type(item) for item in items]
        for item_type, ipath in zip(types, item_paths, strict=True):
            if item_type is None:
                errors.append(RuleError(ipath, "an attribute is compared with a string, a number or a boolean"))
        if not errors and len(set(types)) > 1:
            errors.append(RuleError(vpath, 'all values must have the same JSON type (2 and "2" differ)'))
        if not errors and op in ORDER_OPS and types[0] == "boolean":
            errors.append(RuleError(vpath, f"{op} compares numbers or strings, not booleans"))
        if not errors and op == "contains" and types[0] == "boolean":
            errors.append(RuleError(vpath, "contains takes a string or a number"))
    if errors:
        return errors
    if op == "between":
        low, high = items
        if kind == "datetime":
            low, high = parse_instant(low), parse_instant(high, end_of_day=True)
        if low > high:
            errors.append(RuleError(vpath, "between needs low <= high"))
    return errors


def _validate_comparison(body: Any, path: str, kind: str) -> list[RuleError]:
    """{"gte": 2, "lt": 5}: ops from COMPARISON_OPS, numbers of `kind` (int, number or
    score 1-5)."""
    if not isinstance(body, dict) or not body:
        return [RuleError(path, f"must be an object of comparisons ({', '.join(COMPARISON_OPS)})")]
    errors = []
    for op, value in body.items():
        opath = _ptr(path, op)
        if op not in COMPARISON_OPS:
            errors.append(RuleError(opath, f"unknown comparison; expected one of: {', '.join(COMPARISON_OPS)}"))
        elif kind == "number" and not _is_number(value):
            errors.append(RuleError(opath, "must be a number"))
        elif kind in ("int", "score") and (not isinstance(value, int) or isinstance(value, bool)):
            errors.append(RuleError(opath, "must be an integer"))
        elif kind == "score" and not 1 <= value <= 5:
            errors.append(RuleError(opath, "a score is between 1 and 5"))
        elif kind == "int" and value < 0:
            errors.append(RuleError(opath, "must be >= 0"))
    return errors


EVENT_KEYS = ("kind", "channel", "campaign_id", "sku", "category", "within_days", "between", "count", "revenue")


def _validate_event(body: Any, path: str, ctx: Context) -> list[RuleError]:
    if not isinstance(body, dict):
        return [RuleError(path, "must be an object with at least a kind")]
    errors = [RuleError(_ptr(path, key), "unknown key") for key in body if key not in EVENT_KEYS]
    if not isinstance(body.get("kind"), str) or not body["kind"]:
        errors.append(RuleError(_ptr(path, "kind"), "is required: a touchpoint kind such as purchase"))
    for key in ("channel", "sku", "category"):
        if key in body and not isinstance(body[key], str):
            errors.append(RuleError(_ptr(path, key), "must be a string"))
    if "campaign_id" in body and (not isinstance(body["campaign_id"], int) or isinstance(body["campaign_id"], bool)):
        errors.append(RuleError(_ptr(path, "campaign_id"), "must be an integer"))
    if "within_days" in body and "between" in body:
        errors.append(RuleError(_ptr(path, "between"), "give within_days or between, not both"))
    if "within_days" in body:
        days = body["within_days"]
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_WITHIN_DAYS:
            errors.append(RuleError(_ptr(path, "within_days"), f"must be an integer from 1 to {MAX_WITHIN_DAYS}"))
    if "between" in body:
        bpath = _ptr(path, "between")
        bounds = body["between"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            errors.append(RuleError(bpath, "between takes a list of two dates or date-times [from, to]"))
        else:
            parsed = [parse_instant(bounds[0]), parse_instant(bounds[1], end_of_day=True)]
            for index, instant in enumerate(parsed):
                if instant is None:
                    errors.append(RuleError(_ptr(bpath, index), "expected ISO 8601 with a UTC offset, or a date"))
            if None not in parsed and parsed[0] > parsed[1]:
                errors.append(RuleError(bpath, "between needs from <= to"))
    if "count" in body:
        errors += _validate_comparison(body["count"], _ptr(path, "count"), "int")
    if "revenue" in body:
        errors += _validate_comparison(body["revenue"], _ptr(path, "revenue"), "number")
    return errors


def _validate_rfm(body: Any, path: str, ctx: Context) -> list[RuleError]:
    if not isinstance(body, dict) or not body:
        return [RuleError(path, f"must be an object with group or any of: {', '.join(RFM_MEASURES)}")]
    errors = []
    for key, value in body.items():
        if key == "group":
            if value not in RFM_GROUPS:
                errors.append(
                    RuleError(_ptr(path, key), f"unknown RFM group; expected one of: {', '.join(RFM_GROUPS)}")
                )
        elif key in RFM_MEASURES:
            errors += _validate_comparison(value, _ptr(path, key), RFM_MEASURES[key])
        else:
            errors.append(RuleError(_ptr(path, key), "unknown key"))
    return errors


def _validate_consent(body: Any, path: str, ctx: Context) -> list[RuleError]:
    if body not in CONSENT_CHANNELS:
        return [RuleError(path, f"must be one of: {', '.join(CONSENT_CHANNELS)}")]
    return []


def _validate_segment(body: Any, path: str, ctx: Context) -> list[RuleError]:
    if not isinstance(body, int) or isinstance(body, bool):
        return [RuleError(path, "must be a segment id (an integer)")]
    if body in ctx.segment_chain:
        chain = " → ".join(str(s) for s in (*ctx.segment_chain[ctx.segment_chain.index(body) :], body))
        return [RuleError(path, f"segment reference cycle: {chain}")]
    loaded = ctx.load_segment(body)
    if loaded is None:
        return [RuleError(path, f"unknown segment {body}")]
    kind, definition = loaded
    if kind != "rules":
        return []  # its stored memberships (as of its last rebuild): no tree, no cycle
    inner = Context(now=ctx.now, segment_chain=(*ctx.segment_chain, body), segments=ctx.segments)
    problems = _validate_node(definition, "", inner, 0)
    if not problems:
        return []
    # A cycle or a broken tree further down: report it here, where this tree refers to it.
    cycle = next((p for p in problems if "cycle" in p.message), None)
    if cycle is not None:
        return [RuleError(path, cycle.message)]
    first = problems[0]
    return [RuleError(path, f"segment {body} has an invalid rule tree ({first.path or '/'}: {first.message})")]


# --- compilation -----------------------------------------------------------------------------


def compile_definition(tree: Any, *, now: datetime | None = None, segment_id: int | None = None) -> Q:
    """The Q over Customer of a valid tree, erased customers excluded. Raises RuleInvalid
    when the tree is not valid (e.g. a referenced segment changed since it was saved)."""
    ctx = Context(now=now or timezone.now(), segment_chain=(segment_id,) if segment_id is not None else ())
    errors = _validate_node(tree, "", ctx, 0)
    if errors:
        raise RuleInvalid(errors)
    return Q(erased_at__isnull=True) & compile_node(tree, ctx)


def segment_customers(tree: Any, *, now: datetime | None = None, segment_id: int | None = None):
    """The customers of a rule tree, as one lazy queryset (one SQL statement)."""
    return Customer.objects.filter(compile_definition(tree, now=now, segment_id=segment_id))


def compile_node(node: dict, ctx: Context) -> Q:
    """Compile an already validated node (explain compiles nodes one by one)."""
    if "field" in node:
        return _compile_field(node)
    ((key, body),) = node.items()
    if key == "all":
        q = Q()
        for child in body:
            q &= compile_node(child, ctx)
        return q
    if key == "any":
        q = compile_node(body[0], ctx)
        for child in body[1:]:
            q |= compile_node(child, ctx)
        return q
    if key == "not":
        return ~compile_node(body, ctx)
    return LEAVES[key].compile(body, ctx)


_LOOKUP = {"eq": "exact", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}


def _compile_field(node: dict) -> Q:
    name, op, value = node["field"], node["op"], node["value"]
    kind = _field_kind(name)
    if kind == "attribute":
        return _compile_attribute(name[len(ATTRIBUTE_PREFIX) :], op, value)
    if op == "exists":
        present = ~Q(**{name: ""}) if kind == "text" else Q(**{f"{name}__isnull": False})
        return present if value else ~present
    if kind == "datetime":
        if op == "between":
            value = [parse_instant(value[0]), parse_instant(value[1], end_of_day=True)]
            # a date as the upper bound means "through that day"
            upper = "lt" if _is_date_only(node["value"][1]) else "lte"
            return Q(**{f"{name}__gte": value[0], f"{name}__{upper}": value[1]})
        value = [parse_instant(v) for v in value] if isinstance(value, list) else parse_instant(value)
    if op == "ne":
        return ~Q(**{name: value})
    if op == "in":
        return Q(**{f"{name}__in": value})
    if op == "not_in":
        return ~Q(**{f"{name}__in": value})
    if op == "between":
        return Q(**{f"{name}__gte": value[0], f"{name}__lte": value[1]})
    if op == "contains":
        return Q(**{f"{name}__icontains": value})
    return Q(**{f"{name}__{_LOOKUP[op]}": value})


class AttributeCondition(Expression):
    """A typed test of one key of Customer.attributes, true or false (never NULL, so NOT
    works), and never a cast that could fail on another customer's odd value: PostgreSQL
    compares jsonb to jsonb behind a jsonb_typeof guard; SQLite guards with json_type."""

    conditional = True
    output_field = BooleanField()

    _PG_TYPES = {"number": "'number'", "string": "'string'", "boolean": "'boolean'"}
    _SQLITE_TYPES = {"number": "('integer', 'real')", "string": "('text')", "boolean": "('true', 'false')"}
    _SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

    def __init__(self, key: str, op: str, value: Any):
        super().__init__()
        self.key, self.op, self.value = key, op, value
        self.column = F("attributes")

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, exprs):
        (self.column,) = exprs

    def _values(self) -> list:
        return self.value if isinstance(self.value, list) else [self.value]

    def as_postgresql(self, compiler, connection):
        column, params = compiler.compile(self.column)
        params = list(params)
        key = f"({column} -> %s)"

        def at() -> str:
            params.append(self.key)
            return key

        op, value = self.op, self.value
        if op == "exists":
            sql = f"{at()} IS NOT NULL"
        elif op == "contains":
            if isinstance(value, str):
                sql = (
                    f"CASE jsonb_typeof({key}) WHEN 'string' THEN strpos(lower({column} ->> %s), lower(%s)) > 0 "
                    f"WHEN 'array' THEN {key} @> %s::jsonb ELSE false END"
                )
                params += [self.key, self.key, value, self.key, json.dumps([value])]
            else:
                sql = f"jsonb_typeof({at()}) = 'array' AND {at()} @> %s::jsonb"
                params.append(json.dumps([value]))
        elif op in ("in", "between") or op in self._SQL_OPS:
            json_type = self._PG_TYPES[_json_type(self._values()[0])]
            if op == "in":
                sql = f"{at()} IN ({', '.join(['%s::jsonb'] * len(value))})"
                params += [json.dumps(v) for v in value]
            elif op == "between":
                sql = f"jsonb_typeof({at()}) = {json_type} AND {at()} BETWEEN %s::jsonb AND %s::jsonb"
                params += [json.dumps(v) for v in value]
            else:
                # jsonb equality is already typed (2 <> "2"); ordering across types is not
                sql = f"jsonb_typeof({at()}) = {json_type} AND {at()} {self._SQL_OPS[op]} %s::jsonb"
                params.append(json.dumps(value))
        else:  # pragma: no cover - ne/not_in are compiled as NOT eq/in
            raise ValueError(op)
        return f"COALESCE(({sql}), false)", params

    def as_sqlite(self, compiler, connection):
        column, params = compiler.compile(self.column)
        params = list(params)
        json_path = "$." + json.dumps(self.key)

        def typ() -> str:
            params.append(json_path)
            return f"json_type({column}, %s)"

        def val() -> str:
            params.append(json_path)
            return f"json_extract({column}, %s)"

        op, value = self.op, self.value
        if op == "exists":
            sql = f"{typ()} IS NOT NULL"
        elif op == "contains":
            if isinstance(value, str):
                t = typ()
                v = val()
                sql = (
                    f"CASE {t} WHEN 'text' THEN instr(lower({v}), lower(%s)) > 0 "
                    f"WHEN 'array' THEN EXISTS (SELECT 1 FROM json_each({column}, %s) AS e "
                    f"WHERE e.type = 'text' AND e.value = %s) ELSE 0 END"
                )
                params += [value, json_path, value]
            else:
                sql = (
                    f"{typ()} = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, %s) AS e "
                    f"WHERE e.type IN ('integer', 'real') AND e.value = %s)"
                )
                params += [json_path, value]
        else:
            first = self._values()[0]
            json_type = self._SQLITE_TYPES[_json_type(first)]
            if isinstance(first, bool):
                # json_extract gives 1/0 for true/false: the json_type alone decides
                if op == "eq":
                    sql = f"{typ()} = {'%s'}"
                    params.append("true" if value else "false")
                else:  # in
                    sql = f"{typ()} IN ({', '.join(['%s'] * len(value))})"
                    params += ["true" if v else "false" for v in value]
            elif op == "in":
                t = typ()
                sql = f"{t} IN {json_type} AND {val()} IN ({', '.join(['%s'] * len(value))})"
                params += list(value)
            elif op == "between":
                t = typ()
                sql = f"{t} IN {json_type} AND {val()} BETWEEN %s AND %s"
                params += list(value)
            else:
                t = typ()
                sql = f"{t} IN {json_type} AND {val()} {self._SQL_OPS[op]} %s"
                params.append(value)
        return f"COALESCE(({sql}), 0)", params


def _compile_attribute(key: str, op: str, value: Any) -> Q:
    if op == "exists":
        present = Q(AttributeCondition(key, "exists", True))
        return present if value else ~present
    if op == "ne":
        return ~Q(AttributeCondition(key, "eq", value))
    if op == "not_in":
        return ~Q(AttributeCondition(key, "in", value))
    return Q(AttributeCondition(key, op, value))


_COMPARATORS = {
    "eq": Exact,
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
    "lt": LessThan,
    "lte": LessThanOrEqual,
}


def _compare(lhs, comparisons: dict) -> Q:
    q = Q()
    for op, value in comparisons.items():
        q &= Q(_COMPARATORS[op](lhs, Value(value)))
    return q


def event_touchpoints(body: dict, ctx: Context):
    """The touchpoints of one customer (OuterRef pk) that an event leaf looks at."""
    filters: dict[str, Any] = {"customer_id": OuterRef("pk"), "kind": body["kind"]}
    for key in ("channel", "campaign_id", "sku"):
        if key in body:
            filters[key] = body[key]
    if "within_days" in body:
        filters["occurred_at__gte"] = ctx.now - timedelta(days=body["within_days"])
        filters["occurred_at__lte"] = ctx.now
    if "between" in body:
        low, high = body["between"]
        filters["occurred_at__gte"] = parse_instant(low)
        upper = "lt" if _is_date_only(high) else "lte"
        filters[f"occurred_at__{upper}"] = parse_instant(high, end_of_day=True)
    touchpoints = Touchpoint.objects.filter(**filters)
    if "category" in body:
        touchpoints = touchpoints.filter(sku__in=Product.objects.filter(category=body["category"]).values("sku"))
    return touchpoints.order_by()


def _compile_event(body: dict, ctx: Context) -> Q:
    touchpoints = event_touchpoints(body, ctx)
    count, revenue = body.get("count"), body.get("revenue")
    if count is None and revenue is None:
        return Q(Exists(touchpoints))
    q = Q()
    if count is not None:
        if count == {"gte": 1} or count == {"gt": 0}:
            q &= Q(Exists(touchpoints))
        else:
            counted = Count("order_id", distinct=True) if body["kind"] in ORDER_KINDS else Count("id")
            per_customer = touchpoints.values("customer_id").annotate(n=counted).values("n")
            q &= _compare(Coalesce(Subquery(per_customer), 0), count)
    if revenue is not None:
        per_customer = touchpoints.values("customer_id").annotate(total=Sum("revenue")).values("total")
        total = Coalesce(Subquery(per_customer), Value(Decimal(0)), output_field=Touchpoint._meta.get_field("revenue"))
        q &= _compare(total, {op: Decimal(str(v)) for op, v in revenue.items()})
    return q


def _compile_rfm(body: dict, ctx: Context) -> Q:
    rows = CustomerRFM.objects.filter(customer_id=OuterRef("pk"))
    for key, value in body.items():
        if key == "group":
            cells = Q()
            for r_scores, f_scores in RFM_GROUPS[value]:
                cells |= Q(
                    r_score__gte=r_scores.start,
                    r_score__lt=r_scores.stop,
                    f_score__gte=f_scores.start,
                    f_score__lt=f_scores.stop,
                )
            rows = rows.filter(cells)
        else:
            for op, bound in value.items():
                bound = Decimal(str(bound)) if key == "monetary" else bound
                rows = rows.filter(**{f"{key}__{_LOOKUP[op]}": bound})
    return Q(Exists(rows))


def _compile_consent(body: str, ctx: Context) -> Q:
    return Q(**{f"{body}_opt_in": True, "unsubscribed_at__isnull": True})


def _compile_segment(body: int, ctx: Context) -> Q:
    kind, definition = ctx.load_segment(body)
    if kind != Segment.Kind.RULES:
        return Q(pk__in=SegmentMembership.objects.filter(segment_id=body).values("customer_id"))
    inner = Context(now=ctx.now, segment_chain=(*ctx.segment_chain, body), segments=ctx.segments)
    return compile_node(definition, inner)


# --- JSON Schema ---------------------------------------------------------------------------

_COMPARISON_SCHEMA = {
    "type": "object",
    "description": 'Comparisons, all of which must hold, e.g. {"gte": 2, "lt": 5}.',
    "properties": {op: {"type": "number"} for op in COMPARISON_OPS},
    "additionalProperties": False,
    "minProperties": 1,
}

_EVENT_SCHEMA = {
    "type": "object",
    "description": (
        "The customer has touchpoints of this kind matching the filters in the window (within_days: the last "
        "N days; between: [from, to] inclusive), with count (default >= 1; distinct orders for purchase/refund) "
        'and/or revenue (sum) conditions. \'Has not done X in N days\' is {"not": {"event": {...}}}.'
    ),
    "properties": {
        "kind": {"type": "string", "minLength": 1},
        "channel": {"type": "string"},
        "campaign_id": {"type": "integer"},
        "sku": {"type": "string"},
        "category": {"type": "string", "description": "Touchpoints whose sku is a product of this category."},
        "within_days": {"type": "integer", "minimum": 1, "maximum": MAX_WITHIN_DAYS},
        "between": {
            "type": "array",
            "items": {"type": "string", "description": "ISO 8601 date-time with offset, or a date."},
            "minItems": 2,
            "maxItems": 2,
        },
        "count": {"$ref": "#/$defs/comparison"},
        "revenue": {"$ref": "#/$defs/comparison"},
    },
    "required": ["kind"],
    "additionalProperties": False,
}

_RFM_SCHEMA = {
    "type": "object",
    "description": "Over the customer's RFM row; customers without one (or with nulls) do not match.",
    "properties": {
        **{measure: {"$ref": "#/$defs/comparison"} for measure in RFM_MEASURES},
        "group": {"type": "string", "enum": list(RFM_GROUPS)},
    },
    "additionalProperties": False,
    "minProperties": 1,
}

_FIELD_SCHEMA = {
    "type": "object",
    "description": (
        "A customer field or attributes.<key> (one level). Model field values are checked against the field's "
        "type. Attribute comparisons are typed by the JSON type of value: numbers match only JSON numbers "
        '(numerically), strings only strings, booleans only booleans, so 2 does NOT equal "2"; a missing or '
        "differently typed attribute simply does not match (ne and not_in are the complements of eq and in). "
        "contains: case-insensitive substring of a string, or an element of a JSON array. exists: key present "
        "(attributes), non-empty (text) or set (date-times); value true/false. between: [low, high] inclusive."
    ),
    "properties": {
        "field": {
            "type": "string",
            "description": "One of " + ", ".join(sorted(MODEL_FIELDS)) + ", or attributes.<key>.",
        },
        "op": {"type": "string", "enum": list(OPS)},
        "value": {"description": "A string, number or boolean; a list for in, not_in and between."},
    },
    "required": ["field", "op", "value"],
    "additionalProperties": False,
}


def _single(key: str, schema: dict, description: str | None = None) -> dict:
    node = {"type": "object", "properties": {key: schema}, "required": [key], "additionalProperties": False}
    if description:
        node["description"] = description
    return node


def rule_tree_json_schema() -> dict:
    """The rule tree as a JSON Schema (draft 2020-12), built from the registered leaves."""
    leaf_defs = {name: leaf.schema or {} for name, leaf in LEAVES.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://marketing.invalid/schemas/segment-rule-tree.json",
        "title": "Segment rule tree",
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "description": "A condition: all/any/not of conditions, or a leaf.",
                "oneOf": [
                    {"$ref": "#/$defs/all"},
                    {"$ref": "#/$defs/any"},
                    {"$ref": "#/$defs/not"},
                    {"$ref": "#/$defs/field"},
                    *({"$ref": f"#/$defs/{name}"} for name in leaf_defs),
                ],
            },
            "all": _single("all", {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 1}),
            "any": _single("any", {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 1}),
            "not": _single("not", {"$ref": "#/$defs/node"}),
            "field": _FIELD_SCHEMA,
            "comparison": _COMPARISON_SCHEMA,
            **{name: _single(name, schema) for name, schema in leaf_defs.items()},
        },
    }


register_leaf("event", _validate_event, _compile_event, _EVENT_SCHEMA)
register_leaf("rfm", _validate_rfm, _compile_rfm, _RFM_SCHEMA)
register_leaf(
    "consent",
    _validate_consent,
    _compile_consent,
    {"type": "string", "enum": list(CONSENT_CHANNELS), "description": "Opted in and not unsubscribed."},
)
register_leaf(
    "segment",
    _validate_segment,
    _compile_segment,
    {
        "type": "integer",
        "description": (
            "Member of another segment: a rules segment's tree is compiled inline (cycles refused); other kinds "
            "count their memberships as of their last rebuild."
        ),
    },
)

# The published constant (the leaves registered above; later leaves appear in the API
# docs, which call rule_tree_json_schema() when the schema is generated).
RULE_TREE_JSON_SCHEMA = rule_tree_json_schema()
