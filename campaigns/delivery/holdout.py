"""The holdout: a customer is held out of a campaign when

    int(first 8 hex digits of sha256("<salt>|<campaign id>|<customer id>"), 16) mod 10000
        < holdout percent x 100

(so 10% holds out buckets 0-999). The same number in Python (`holdout_bucket`) and in SQL
(`HoldoutBucket`, PostgreSQL's sha256(); on SQLite a function registered on each
connection), so a launch assigns it set-based and anyone can recompute it. Stable: a
customer is in the same group in every run of the campaign."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from django.db.backends.signals import connection_created
from django.db.models import BigIntegerField, Func

BUCKETS = 10_000


def holdout_bucket(salt: str, campaign_id: int, customer_id: int) -> int:
    digest = hashlib.sha256(f"{salt}|{campaign_id}|{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def holdout_threshold(percent: Decimal | float | int) -> int:
    """Buckets below this are held out."""
    return int((Decimal(str(percent)) * 100).to_integral_value())


def is_held_out(salt: str, campaign_id: int, customer_id: int, percent: Decimal | float | int) -> bool:
    return holdout_bucket(salt, campaign_id, customer_id) < holdout_threshold(percent)


class HoldoutBucket(Func):
    """SQL: the holdout bucket of (salt, campaign id, customer id expressions)."""

    output_field = BigIntegerField()
    arity = 3

    def as_postgresql(self, compiler, connection, **extra):
        salt, campaign, customer = (compiler.compile(expr) for expr in self.get_source_expressions())
        # mod() rather than the % operator, which would read as a placeholder once the
        # SQL is run with parameters.
        sql = (
            "mod(('x' || substr(encode(sha256(convert_to("
            f"{salt[0]} || '|' || ({campaign[0]})::text || '|' || ({customer[0]})::text, 'UTF8')), 'hex'), 1, 8))"
            f"::bit(32)::bigint, {BUCKETS})"
        )
        return sql, (*salt[1], *campaign[1], *customer[1])

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="holdout_bucket", **extra)


def _sqlite_holdout_bucket(salt, campaign_id, customer_id):
    if salt is None or campaign_id is None or customer_id is None:
        return None
    return holdout_bucket(str(salt), int(campaign_id), int(customer_id))


def _register_sqlite_function(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("holdout_bucket", 3, _sqlite_holdout_bucket, deterministic=True)


connection_created.connect(_register_sqlite_function, dispatch_uid="campaigns.delivery.holdout")
