"""Funnels: a spec (analytics.funnels.spec: FunnelSpec parsed and validated from JSON),
a query builder per order mode (analytics.funnels.sql: one scan on PostgreSQL, a SQLite
fallback with the same answers) and the answer's shape (analytics.funnels.compute).
Services call them through analytics.services (funnel_compute, funnel_validate, funnel_save)."""

from analytics.funnels.compute import funnel_references, funnel_result
from analytics.funnels.spec import Breakdown, FunnelSpec, FunnelSpecInvalid, FunnelStep, parse_funnel_spec

__all__ = [
    "Breakdown",
    "FunnelSpec",
    "FunnelSpecInvalid",
    "FunnelStep",
    "funnel_references",
    "funnel_result",
    "parse_funnel_spec",
]
