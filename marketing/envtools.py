"""Small typed helpers that read settings from environment variables.

Kept free of Django imports: settings.py uses them before Django is configured.
"""

from __future__ import annotations

import os
import socket
from decimal import Decimal, InvalidOperation
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_rates(name: str) -> dict[str, Decimal]:
    """Parse "EUR=1.08,GBP=1.27": units of the reporting currency per one unit of each."""
    rates: dict[str, Decimal] = {}
    for item in env_list(name, []):
        code, _, rate = item.partition("=")
        code = code.strip().upper()
        try:
            value = Decimal(rate.strip())
        except InvalidOperation:
            value = Decimal(0)
        if len(code) != 3 or not code.isalpha() or value <= 0:
            raise ImproperlyConfigured(f"{name}: {item!r} is not CODE=positive-rate (e.g. EUR=1.08)")
        rates[code] = value
    return rates


def tcp_reachable(url: str, default_port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host.startswith("/"):  # a unix socket directory: let the driver find out
        return True
    try:
        with socket.create_connection((host, parsed.port or default_port), timeout=timeout):
            return True
    except OSError:
        return False
