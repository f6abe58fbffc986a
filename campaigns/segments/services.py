"""Segment writes and the rule-tree previews: plain functions that views, the admin and
(later) Celery tasks call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone

from campaigns.models import Campaign, Segment
from campaigns.segments.ml import affinity_definition_errors, affinity_q, cluster_definition_errors, cluster_q
from campaigns.segments.rules import (
    Context,
    RuleError,
    RuleInvalid,
    compile_node,
    segment_customers,
    validate_definition,
)
from marketing.errors import Conflict
from marketing.models import Customer

IMPLEMENTED_KINDS = frozenset({Segment.Kind.RULES, Segment.Kind.CLUSTER, Segment.Kind.AFFINITY})


def segment_definition_check(kind: str, definition: Any, segment_id: int | None = None) -> None:
    """Raise RuleInvalid with every problem of a definition of `kind`."""
    if kind == Segment.Kind.RULES:
        errors = validate_definition(definition, segment_id=segment_id)
    elif kind == Segment.Kind.CLUSTER:
        errors = cluster_definition_errors(definition)
    elif kind == Segment.Kind.AFFINITY:
        errors = affinity_definition_errors(definition)
    else:
        errors = [RuleError("", f"{kind} segments cannot be defined yet; only rules, cluster and affinity segments")]
    if errors:
        raise RuleInvalid(errors)


def segment_target(kind: str, definition: Any, *, now: datetime | None = None, segment_id: int | None = None):
    """The customers (a QuerySet) a valid definition of `kind` selects now, erased ones left out."""
    if kind == Segment.Kind.RULES:
        return segment_customers(definition, now=now, segment_id=segment_id)
    alive = Customer.objects.filter(erased_at__isnull=True)
    if kind == Segment.Kind.CLUSTER:
        return alive.filter(cluster_q(definition))
    return alive.filter(affinity_q(definition, now))


@transaction.atomic
def segment_create(*, name: str, kind: str = Segment.Kind.RULES, definition: Any, description: str = "") -> Segment:
    segment_definition_check(kind, definition)
    return Segment.objects.create(name=name, kind=kind, definition=definition, description=description)


@transaction.atomic
def segment_update(segment: Segment, **changes: Any) -> Segment:
    """Change name, description, kind or definition; the new definition is validated
    (including cycles through this segment) before anything is written."""
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    for key, value in changes.items():
        setattr(segment, key, value)
    segment_definition_check(segment.kind, segment.definition, segment_id=segment.pk)
    segment.updated_at = timezone.now()
    segment.save()
    return segment


def _references(node: Any) -> set[int]:
    if isinstance(node, dict):
        found = {node["segment"]} if isinstance(node.get("segment"), int) and len(node) == 1 else set()
        for value in node.values():
            found |= _references(value)
        return found
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node)) if node else set()
    return set()


def segment_campaigns(segment: Segment) -> list[Campaign]:
    """The campaigns that use a segment as audience, exclusion or trigger, by id."""
    return list(
        Campaign.objects.filter(Q(audience=segment) | Q(exclusions=segment) | Q(trigger_segment=segment))
        .distinct()
        .order_by("pk")
        .only("pk", "name")
    )


def segment_delete_blocker(segment: Segment) -> str | None:
    """Why a segment cannot be deleted now, or None: a campaign uses it (as audience,
    exclusion or trigger; a finished campaign keeps its definition as its record), or
    another rules segment refers to it (a handful of rows to scan)."""
    campaigns = segment_campaigns(segment)
    if campaigns:
        named = ", ".join(f"{campaign.pk} ({campaign.name})" for campaign in campaigns)
        return f"Segment {segment.pk} is used by campaign(s) {named}; change those first."
    users = [
        other.pk
        for other in Segment.objects.filter(kind=Segment.Kind.RULES).exclude(pk=segment.pk).only("definition")
        if segment.pk in _references(other.definition)
    ]
    if users:
        return f"Segment {segment.pk} is used by segment(s) {', '.join(map(str, users))}; change those first."
    return None


@transaction.atomic
def segment_delete(segment: Segment) -> None:
    """Delete a segment nothing uses (Conflict naming the users otherwise)."""
    blocker = segment_delete_blocker(segment)
    if blocker is not None:
        raise Conflict(blocker)
    try:
        with transaction.atomic():
            segment.delete()
    except ProtectedError:  # a campaign took it as its trigger since the check above
        raise Conflict(f"Segment {segment.pk} is now used by a campaign; change that first.") from None


def segment_preview(
    definition: Any, sample_size: int = 20, *, kind: str = Segment.Kind.RULES, now: datetime | None = None
) -> dict:
    """How many customers a definition selects now and a sample of them (lowest ids),
    without saving anything."""
    segment_definition_check(kind, definition)
    customers = segment_target(kind, definition, now=now)
    sample = list(customers.order_by("id").values("id", "external_id", "email")[:sample_size])
    return {"count": customers.count(), "sample": sample}


def segment_explain(definition: Any, customer: Customer, *, now: datetime | None = None) -> dict:
    """Why `customer` is (or is not) selected by a definition: every node of the tree with
    its result for this customer, referenced rules segments expanded (their nodes' paths
    continue below the `segment` node's path). One small query per node: it is one
    customer."""
    segment_definition_check(Segment.Kind.RULES, definition)
    ctx = Context(now=now or timezone.now())
    one = Customer.objects.filter(pk=customer.pk)

    def explain(node: dict, path: str) -> dict:
        result = one.filter(compile_node(node, ctx)).exists()
        out: dict[str, Any] = {"node": node, "path": path, "result": result, "children": []}
        if "field" in node:
            out["actual"] = _actual(customer, node["field"])
        elif "all" in node or "any" in node:
            key = "all" if "all" in node else "any"
            out["children"] = [explain(child, f"{path}/{key}/{i}") for i, child in enumerate(node[key])]
        elif "not" in node:
            out["children"] = [explain(node["not"], f"{path}/not")]
        elif "segment" in node:
            # A referenced rules segment is explained through its own tree, whose paths
            # continue below this node's: /all/0/segment + the pointer in that tree.
            kind, definition = ctx.load_segment(node["segment"])
            out["segment"] = {"id": node["segment"], "kind": kind}
            if kind == Segment.Kind.RULES:
                out["children"] = [explain(definition, f"{path}/segment")]
        return out

    tree = explain(definition, "")
    erased = customer.erased_at is not None
    return {
        "customer": {"id": customer.pk, "external_id": customer.external_id},
        "member": tree["result"] and not erased,
        "erased": erased,
        "tree": tree,
    }


def _actual(customer: Customer, name: str) -> Any:
    """The customer's value that a field leaf looked at (JSON-ready)."""
    if name.startswith("attributes."):
        key = name.removeprefix("attributes.")
        return (customer.attributes or {}).get(key)
    value = getattr(customer, name)
    return value.isoformat() if isinstance(value, datetime) else value
