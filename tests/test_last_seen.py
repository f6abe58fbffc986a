"""customers_refresh_last_seen: folds new touchpoints into Customer.last_seen_at from a
checkpoint, counting only what the customer did (not what we sent them), idempotent and
never moving backwards."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Max
from django.test import TestCase

from marketing.ingest import touchpoints_bulk_insert
from marketing.ingest.last_seen import CHECKPOINT, customers_refresh_last_seen
from marketing.models import Customer, IngestCheckpoint, Touchpoint
from tests.ingest_helpers import touchpoint


def at(hour: int, day: int = 1) -> str:
    return f"2025-03-{day:02d}T{hour:02d}:00:00Z"


def utc(hour: int, day: int = 1) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=UTC)


def last_seen() -> dict[str, datetime | None]:
    return dict(Customer.objects.order_by("external_id").values_list("external_id", "last_seen_at"))


class LastSeenRefreshTests(TestCase):
    def test_it_moves_last_seen_to_the_latest_touchpoint_the_customer_made(self):
        touchpoints_bulk_insert(
            [
                touchpoint("v1", customer="ann", kind="visit", occurred_at=at(9)),
                touchpoint("c1", customer="ann", kind="click", occurred_at=at(11)),
                touchpoint("v2", customer="ann", kind="trial_started", occurred_at=at(10)),
                touchpoint("s1", customer="ann", kind="sent", occurred_at=at(12)),
                touchpoint("d1", customer="ann", kind="delivered", occurred_at=at(13)),
                touchpoint("h1", customer="ann", kind="held_out", occurred_at=at(14)),
                touchpoint("b1", customer="ann", kind="bounce", occurred_at=at(15)),
                touchpoint("o1", customer="bob", kind="open", occurred_at=at(8)),
            ]
        )

        self.assertEqual(customers_refresh_last_seen(), 2)
        self.assertEqual(last_seen(), {"ann": utc(11), "bob": utc(8)})

    def test_system_touchpoints_alone_do_not_make_a_customer_seen(self):
        touchpoints_bulk_insert(
            [
                touchpoint("s1", customer="cat", kind="sent", occurred_at=at(12)),
                touchpoint("h1", customer="cat", kind="held_out", occurred_at=at(12)),
                touchpoint("d1", customer="cat", kind="delivered", occurred_at=at(13)),
                touchpoint("b1", customer="cat", kind="bounce", occurred_at=at(14)),
            ]
        )

        self.assertEqual(customers_refresh_last_seen(), 0)
        self.assertEqual(last_seen(), {"cat": None})

    def test_it_is_idempotent(self):
        touchpoints_bulk_insert([touchpoint("v1", customer="ann", occurred_at=at(9))])
        self.assertEqual(customers_refresh_last_seen(), 1)

        self.assertEqual(customers_refresh_last_seen(), 0)
        self.assertEqual(last_seen(), {"ann": utc(9)})

    def test_it_records_how_far_it_has_read_the_touchpoint_log(self):
        touchpoints_bulk_insert([touchpoint("v1", customer="ann"), touchpoint("v2", customer="bob")])

        customers_refresh_last_seen()

        newest = Touchpoint.objects.aggregate(newest=Max("id"))["newest"]
        self.assertEqual(IngestCheckpoint.objects.get(name=CHECKPOINT).last_id, newest)

    def test_it_picks_up_touchpoints_inserted_after_a_run(self):
        touchpoints_bulk_insert([touchpoint("v1", customer="ann", occurred_at=at(9))])
        customers_refresh_last_seen()

        touchpoints_bulk_insert(
            [
                touchpoint("v2", customer="ann", occurred_at=at(10, day=2)),
                touchpoint("v3", customer="bob", occurred_at=at(7, day=2)),
            ]
        )

        self.assertEqual(customers_refresh_last_seen(), 2)
        self.assertEqual(last_seen(), {"ann": utc(10, day=2), "bob": utc(7, day=2)})

    def test_it_never_moves_last_seen_backwards_for_a_late_older_touchpoint(self):
        touchpoints_bulk_insert([touchpoint("v1", customer="ann", occurred_at=at(12, day=5))])
        customers_refresh_last_seen()

        touchpoints_bulk_insert([touchpoint("v2", customer="ann", occurred_at=at(9, day=1))])

        self.assertEqual(customers_refresh_last_seen(), 0)
        self.assertEqual(last_seen(), {"ann": utc(12, day=5)})

    def test_it_never_moves_last_seen_backwards_from_a_value_set_elsewhere(self):
        touchpoints_bulk_insert([touchpoint("v1", customer="ann", occurred_at=at(9))])
        Customer.objects.filter(external_id="ann").update(last_seen_at=utc(18))

        self.assertEqual(customers_refresh_last_seen(), 0)
        self.assertEqual(last_seen(), {"ann": utc(18)})

    def test_it_compares_instants_not_local_times(self):
        # 11:30+02:00 is 09:30 UTC: earlier than 10:00Z although its local hour is later.
        touchpoints_bulk_insert(
            [
                touchpoint("v1", customer="ann", occurred_at="2025-03-01T11:30:00+02:00"),
                touchpoint("v2", customer="ann", occurred_at="2025-03-01T10:00:00Z"),
            ]
        )

        customers_refresh_last_seen()

        self.assertEqual(last_seen(), {"ann": utc(10)})

    def test_it_does_nothing_without_touchpoints(self):
        Customer.objects.create(external_id="ann")

        self.assertEqual(customers_refresh_last_seen(), 0)
        self.assertEqual(last_seen(), {"ann": None})
