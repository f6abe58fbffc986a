"""Bulk ingest: the fast, safe path for customers, touchpoints and products.

Every batch is validated whole first (a tight loop, not a serializer per row); a batch
with any bad row raises BatchInvalid naming each bad row and field, and writes nothing.
A good batch is written in one transaction: on PostgreSQL by COPY into a temporary
staging table and one set-based upsert/insert from it; on SQLite by the same statements
over a staging table filled with executemany.
"""

from marketing.ingest.service import (
    InsertResult,
    UpsertResult,
    customers_bulk_upsert,
    customers_validate,
    products_bulk_upsert,
    touchpoints_bulk_insert,
)

__all__ = [
    "InsertResult",
    "UpsertResult",
    "customers_bulk_upsert",
    "customers_validate",
    "products_bulk_upsert",
    "touchpoints_bulk_insert",
]
