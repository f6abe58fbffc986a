"""Hooks instead of upward imports.

`marketing` is the bottom layer, yet GDPR erase and export must reach what higher apps hold
about a customer (message bodies, report results), and `seed_demo` must run their demo
steps. Higher apps register functions here from their AppConfig.ready(); marketing calls
them without importing them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[Any], None]  # receives the DemoContext of marketing.demo
    order: int


@dataclass
class _Registry:
    erasers: dict[str, Callable[[int], None]] = field(default_factory=dict)
    exporters: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    demo_steps: dict[str, DemoStep] = field(default_factory=dict)
    customer_panels: dict[str, tuple[str, Callable[[Any], str]]] = field(default_factory=dict)


_registry = _Registry()


def register_eraser(name: str, erase: Callable[[int], None]) -> None:
    """`erase(customer_id)` scrubs what the registering app holds about that customer.
    It runs inside the erase transaction: raising aborts the whole erase."""
    _registry.erasers[name] = erase


def register_exporter(name: str, export: Callable[[int], Any]) -> None:
    """`export(customer_id)` returns JSON-ready data for the customer's GDPR export,
    shown under `name`."""
    _registry.exporters[name] = export


# Demo steps of this order or above run after the RFM refresh (those that learn from the
# data: clusters, rules); the others before it (those that add touchpoints).
DEMO_AFTER_RFM = 1000


def register_demo_step(name: str, run: Callable[[Any], None], order: int = 100) -> None:
    """`run(ctx)` adds the registering app's demo data; steps run by `order` (marketing's
    own population first, at order 0; the RFM refresh between DEMO_AFTER_RFM - 1 and
    DEMO_AFTER_RFM)."""
    _registry.demo_steps[name] = DemoStep(name=name, run=run, order=order)


def register_customer_panel(name: str, title: str, render: Callable[[Any], str]) -> None:
    """`render(customer)` returns safe HTML (format_html) shown under `title` on the
    customer's admin page: what higher layers know about the customer (model scores,
    recommendations) without marketing importing them."""
    _registry.customer_panels[name] = (title, render)


def customer_panels() -> list[tuple[str, Callable[[Any], str]]]:
    return [_registry.customer_panels[name] for name in sorted(_registry.customer_panels)]


def erasers() -> dict[str, Callable[[int], None]]:
    return dict(_registry.erasers)


def exporters() -> dict[str, Callable[[int], Any]]:
    return dict(_registry.exporters)


def demo_steps() -> list[DemoStep]:
    return sorted(_registry.demo_steps.values(), key=lambda step: (step.order, step.name))
