"""PostgreSQL writers: COPY into a session-local staging table, then one set-based
statement per step. Called inside the service's transaction."""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from marketing.bulk import copy_rows
from marketing.ingest.validate import CONSENT_CHANNELS, CUSTOMER_TEXT_KEYS, TOUCHPOINT_COLUMNS, CustomerRow

# Temporary tables live as long as the (persistent) connection; ON COMMIT DELETE ROWS
# empties them at every commit without leaving dead tuples (autovacuum never visits temp
# tables).
TOUCHPOINT_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_touchpoint_stage (
    row_no integer, event_id text, customer_external_id text, kind text, channel text,
    campaign_id bigint, message_id bigint, creative_id bigint, occurred_at timestamptz,
    revenue numeric, currency text, revenue_original numeric, order_id text, sku text,
    properties jsonb
) ON COMMIT DELETE ROWS
"""

CUSTOMER_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_customer_stage (
    row_no integer, external_id text, email text, phone text, first_name text, last_name text,
    country text, timezone text, locale text, attributes jsonb, attributes_remove text[],
    attributes_replace boolean, email_opt_in boolean, sms_opt_in boolean, push_opt_in boolean,
    unsubscribed boolean, created boolean NOT NULL DEFAULT false
) ON COMMIT DELETE ROWS
"""
CUSTOMER_STAGE_COLUMNS = (
    "row_no",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "timezone",
    "locale",
    "attributes",
    "attributes_remove",
    "attributes_replace",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "unsubscribed",
)
PLAIN_TEXT = CUSTOMER_TEXT_KEYS
CONSENTS = CONSENT_CHANNELS


def stub_columns_sql() -> tuple[str, str]:
    """Columns and values for a stub customer: no consent, nothing but the external id.
    Raw inserts must name every NOT NULL column (Django defaults live in Python)."""
    columns = (
        "external_id, email, phone, first_name, last_name, country, timezone, locale, attributes, "
        "email_opt_in, email_opt_in_source, sms_opt_in, sms_opt_in_source, push_opt_in, push_opt_in_source, is_stub"
    )
    values = "'', '', '', '', '', '', '', '{}'::jsonb, false, '', false, '', false, '', true"
    return columns, values


def touchpoints_write(rows: list[tuple]) -> tuple[int, int]:
    """Returns (inserted, customers_created)."""
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # the psycopg cursor, for COPY
        cursor.execute(TOUCHPOINT_STAGE)
        # Empty at the start of a transaction; not when several batches share one (the
        # admin's CSV import does), so clear what an earlier batch left.
        cursor.execute("DELETE FROM ingest_touchpoint_stage")
        copy_rows(cursor, "ingest_touchpoint_stage", TOUCHPOINT_COLUMNS, rows)
        columns, values = stub_columns_sql()
        # One statement resolves every customer once: existing ones by a single probe of
        # the external_id index, unknown ones inserted as stubs (DO UPDATE, a no-op that
        # only runs when a concurrent batch created the same stub first, so RETURNING
        # always yields the id). ON CONFLICT without a target then skips both a replayed
        # event_id and a second event for an order line already recorded. Both inserts are
        # sorted (bytewise: "C" is far cheaper than the database's collation) so
        # concurrent batches wait for each other in one order instead of deadlocking.
        cursor.execute(
            f"""
            WITH ids AS (
                SELECT DISTINCT customer_external_id AS external_id FROM ingest_touchpoint_stage
            ), found AS (
                SELECT c.id, c.external_id FROM marketing_customer c JOIN ids ON c.external_id = ids.external_id
            ), created AS (
                INSERT INTO marketing_customer ({columns})
                SELECT ids.external_id, {values} FROM ids
                WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.external_id = ids.external_id)
                ORDER BY ids.external_id COLLATE "C"
                ON CONFLICT (external_id) DO UPDATE SET is_stub = marketing_customer.is_stub
                RETURNING id, external_id, xmax = 0 AS is_new
            ), resolved AS (
                SELECT id, external_id FROM found UNION ALL SELECT id, external_id FROM created
            ), inserted AS (
                INSERT INTO marketing_touchpoint (
                    customer_id, kind, channel, campaign_id, message_id, creative_id, occurred_at,
                    revenue, currency, revenue_original, order_id, sku, event_id, properties)
                SELECT r.id, s.kind, s.channel, s.campaign_id, s.message_id, s.creative_id, s.occurred_at,
                       s.revenue, s.currency, s.revenue_original, s.order_id, s.sku, s.event_id, s.properties
                FROM ingest_touchpoint_stage s
                JOIN resolved r ON r.external_id = s.customer_external_id
                -- row_no last: rows repeating an event_id keep the batch's first,
                -- whatever order the join produced them in.
                ORDER BY s.order_id COLLATE "C", s.sku COLLATE "C", s.event_id COLLATE "C", s.row_no
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM created WHERE is_new)
            """
        )
        inserted, customers_created = cursor.fetchone()
    return inserted, customers_created


def _customer_stage_rows(rows: list[CustomerRow]):
    import orjson

    for row in rows:
        values = row.values
        attributes = None
        if row.attributes_set is not None:
            attributes = orjson.dumps(row.attributes_set).decode()
        elif row.attributes_clear:
            attributes = "{}"
        yield (
            row.row,
            row.external_id,
            values.get("email"),
            values.get("phone"),
            values.get("first_name"),
            values.get("last_name"),
            values.get("country"),
            values.get("timezone"),
            values.get("locale"),
            attributes,
            row.attributes_remove or None,
            row.attributes_clear,
            values.get("email_opt_in"),
            values.get("sms_opt_in"),
            values.get("push_opt_in"),
            values.get("unsubscribed"),
        )


def customers_write(rows: list[CustomerRow], *, source: str, now: datetime) -> tuple[int, int]:
    """Upsert by external_id. In the staging table NULL means "key omitted": the validator
    already turned an explicit null into '' / false / attributes_replace. Returns
    (created, updated) where updated counts matched rows, changed or not."""
    params = {"now": now, "source": source[:64]}
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute(CUSTOMER_STAGE)
        cursor.execute("DELETE FROM ingest_customer_stage")  # see touchpoints_write
        copy_rows(cursor, "ingest_customer_stage", CUSTOMER_STAGE_COLUMNS, _customer_stage_rows(rows))

        consent_insert = ", ".join(
            f"coalesce(s.{c}_opt_in, false), CASE WHEN s.{c}_opt_in IS NOT NULL THEN %(now)s END, "
            f"CASE WHEN s.{c}_opt_in IS NOT NULL THEN %(source)s ELSE '' END"
            for c in CONSENTS
        )
        text_insert = ", ".join(f"coalesce(s.{name}, '')" for name in PLAIN_TEXT)
        cursor.execute(
            f"""
            WITH inserted AS (
                INSERT INTO marketing_customer (
                    external_id, {", ".join(PLAIN_TEXT)}, attributes,
                    email_opt_in, email_opt_in_at, email_opt_in_source,
                    sms_opt_in, sms_opt_in_at, sms_opt_in_source,
                    push_opt_in, push_opt_in_at, push_opt_in_source,
                    unsubscribed_at, is_stub)
                SELECT s.external_id, {text_insert}, coalesce(s.attributes, '{{}}'::jsonb),
                       {consent_insert},
                       CASE WHEN s.unsubscribed THEN %(now)s END, false
                FROM ingest_customer_stage s
                WHERE NOT EXISTS (SELECT 1 FROM marketing_customer c WHERE c.external_id = s.external_id)
                ORDER BY s.external_id
                ON CONFLICT (external_id) DO NOTHING
                RETURNING external_id
            )
            UPDATE ingest_customer_stage s SET created = true FROM inserted WHERE s.external_id = inserted.external_id
            """,
            params,
        )
        created = cursor.rowcount

        new_attributes = (
            "CASE WHEN s.attributes_replace THEN coalesce(s.attributes, '{}'::jsonb) "
            "WHEN s.attributes IS NULL AND s.attributes_remove IS NULL THEN c.attributes "
            "ELSE (c.attributes || coalesce(s.attributes, '{}'::jsonb)) "
            "- coalesce(s.attributes_remove, '{}'::text[]) END"
        )
        new_unsubscribed = (
            "CASE WHEN s.unsubscribed IS NULL THEN c.unsubscribed_at "
            "WHEN s.unsubscribed THEN coalesce(c.unsubscribed_at, %(now)s) ELSE NULL END"
        )
        text_set = ", ".join(f"{name} = coalesce(s.{name}, c.{name})" for name in PLAIN_TEXT)
        consent_set = ", ".join(
            f"{c}_opt_in = coalesce(s.{c}_opt_in, c.{c}_opt_in), "
            f"{c}_opt_in_at = CASE WHEN s.{c}_opt_in IS DISTINCT FROM c.{c}_opt_in AND s.{c}_opt_in IS NOT NULL "
            f"THEN %(now)s ELSE c.{c}_opt_in_at END, "
            f"{c}_opt_in_source = CASE WHEN s.{c}_opt_in IS DISTINCT FROM c.{c}_opt_in AND s.{c}_opt_in IS NOT NULL "
            f"THEN %(source)s ELSE c.{c}_opt_in_source END"
            for c in CONSENTS
        )
        # Lock the matched customers in id order first: two concurrent batches touching
        # the same customers then queue instead of deadlocking.
        cursor.execute(
            """
            SELECT c.id FROM marketing_customer c
            JOIN ingest_customer_stage s ON c.external_id = s.external_id AND NOT s.created
            ORDER BY c.id FOR UPDATE OF c
            """
        )
        # Only rows that would change are written: a replayed batch rewrites nothing.
        changed = " OR ".join(
            [
                "c.is_stub",
                *(f"(s.{name} IS NOT NULL AND s.{name} <> c.{name})" for name in PLAIN_TEXT),
                *(f"(s.{c}_opt_in IS NOT NULL AND s.{c}_opt_in <> c.{c}_opt_in)" for c in CONSENTS),
                f"({new_attributes}) <> c.attributes",
                f"({new_unsubscribed}) IS DISTINCT FROM c.unsubscribed_at",
            ]
        )
        cursor.execute(
            f"""
            UPDATE marketing_customer c SET
                {text_set}, attributes = {new_attributes}, {consent_set},
                unsubscribed_at = {new_unsubscribed}, is_stub = false, updated_at = %(now)s
            FROM ingest_customer_stage s
            WHERE c.external_id = s.external_id AND NOT s.created AND ({changed})
            """,
            params,
        )
    return created, len(rows) - created
