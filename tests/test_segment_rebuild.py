"""Segment rebuilds: exact entered/exited rows and memberships, idempotence, erased
customers exiting, overlapping rebuilds (PostgreSQL), the tasks and beat schedule, the
admin action, and the /rebuild, /members and /changes endpoints."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase, skipUnlessDBFeature
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import Segment, SegmentChange, SegmentMembership
from campaigns.segments.rebuild import segment_rebuild
from campaigns.segments.rules import RuleInvalid
from campaigns.tasks import segment_rebuild_all, segment_rebuild_task
from marketing.errors import NotFound
from marketing.models import Customer
from marketing.services import customer_erase
from tests.api_helpers import ApiTestCase

T1 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(minutes=15)
T3 = T2 + timedelta(minutes=15)
GOLD = {"field": "attributes.tier", "op": "eq", "value": "gold"}


def changes(segment: Segment) -> list[tuple[str, str, datetime]]:
    """The change log as (external id, change, at), in id order."""
    rows = SegmentChange.objects.filter(segment=segment).order_by("id")
    return [(row.customer.external_id, row.change, row.at) for row in rows.select_related("customer")]


def members(segment: Segment) -> dict[str, datetime]:
    rows = SegmentMembership.objects.filter(segment=segment).select_related("customer")
    return {row.customer.external_id: row.since for row in rows}


def gold(external_id: str, tier: str = "gold") -> Customer:
    return Customer.objects.create(external_id=external_id, attributes={"tier": tier})


class SegmentRebuildTests(TestCase):
    """The cast: ann, ben, cat are gold; dan is silver; and a second, untouched segment."""

    def setUp(self) -> None:
        self.ann, self.ben, self.cat = gold("ann"), gold("ben"), gold("cat")
        self.dan = gold("dan", "silver")
        self.segment = Segment.objects.create(name="gold", definition=GOLD)
        self.other = Segment.objects.create(name="silver", definition={**GOLD, "value": "silver"})

    def test_the_first_rebuild_enters_exactly_the_members(self) -> None:
        result = segment_rebuild(self.segment.pk, now=T1)
        self.assertEqual((result.entered, result.exited, result.members), (3, 0, 3))
        self.assertEqual(
            changes(self.segment), [("ann", "entered", T1), ("ben", "entered", T1), ("cat", "entered", T1)]
        )
        ids = list(SegmentChange.objects.filter(segment=self.segment).values_list("customer_id", flat=True))
        self.assertEqual(ids, [self.ann.pk, self.ben.pk, self.cat.pk])
        self.assertEqual(members(self.segment), {"ann": T1, "ben": T1, "cat": T1})
        self.segment.refresh_from_db()
        self.assertEqual((self.segment.member_count, self.segment.last_rebuilt_at), (3, T1))
        self.assertEqual(self.segment.last_rebuild_duration_ms, result.duration_ms)
        self.assertGreaterEqual(result.duration_ms, 0)
        # the other segment was not touched
        self.assertEqual((members(self.other), changes(self.other)), ({}, []))
        self.other.refresh_from_db()
        self.assertIsNone(self.other.member_count)

    def test_a_rebuild_after_changes_logs_exactly_who_entered_and_who_exited(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        first_ids = list(SegmentChange.objects.order_by("id").values_list("id", flat=True))
        Customer.objects.filter(pk=self.ben.pk).update(attributes={"tier": "silver"})
        Customer.objects.filter(pk=self.dan.pk).update(attributes={"tier": "gold"})
        eve = gold("eve")

        result = segment_rebuild(self.segment.pk, now=T2)

        self.assertEqual((result.entered, result.exited, result.members), (2, 1, 4))
        self.assertEqual(
            changes(self.segment)[3:], [("ben", "exited", T2), ("dan", "entered", T2), ("eve", "entered", T2)]
        )
        new_ids = list(SegmentChange.objects.order_by("id").values_list("id", flat=True))[3:]
        self.assertEqual(new_ids, sorted(new_ids))
        self.assertGreater(new_ids[0], first_ids[-1])
        # members who stayed keep the time they entered
        self.assertEqual(members(self.segment), {"ann": T1, "cat": T1, "dan": T2, "eve": T2})
        self.assertEqual(
            list(SegmentChange.objects.filter(segment=self.segment, id__gt=first_ids[-1]).values_list("customer_id")),
            [(self.ben.pk,), (self.dan.pk,), (eve.pk,)],
        )

    def test_a_rebuild_without_data_changes_writes_nothing(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        log, before = changes(self.segment), members(self.segment)
        membership_ids = sorted(SegmentMembership.objects.values_list("id", flat=True))

        result = segment_rebuild(self.segment.pk, now=T2)

        self.assertEqual((result.entered, result.exited, result.members), (0, 0, 3))
        self.assertEqual(changes(self.segment), log)
        self.assertEqual(members(self.segment), before)
        self.assertEqual(sorted(SegmentMembership.objects.values_list("id", flat=True)), membership_ids)
        self.segment.refresh_from_db()
        self.assertEqual((self.segment.member_count, self.segment.last_rebuilt_at), (3, T2))

    def test_an_erased_customer_exits_at_once_and_the_next_rebuild_adds_nothing(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        segment_rebuild(self.other.pk, now=T1)
        before_erase = timezone.now()

        customer_erase(self.ann)

        self.assertEqual(set(members(self.segment)), {"ben", "cat"})
        external_id, change, at = changes(self.segment)[-1]
        self.assertEqual((external_id, change), (f"erased:{self.ann.pk}", "exited"))
        self.assertTrue(before_erase <= at <= timezone.now())
        self.assertEqual(len(changes(self.segment)), 4)
        self.assertEqual(len(changes(self.other)), 1)  # dan only; ann was never a member
        self.segment.refresh_from_db()
        self.assertEqual(self.segment.member_count, 2)
        result = segment_rebuild(self.segment.pk, now=T2)
        self.assertEqual((result.entered, result.exited, result.members), (0, 0, 2))
        self.assertEqual(len(changes(self.segment)), 4)

    def test_everyone_can_exit_and_come_back(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        Customer.objects.update(attributes={})
        self.assertEqual(segment_rebuild(self.segment.pk, now=T2).exited, 3)
        self.assertEqual(members(self.segment), {})
        Customer.objects.filter(pk=self.cat.pk).update(attributes={"tier": "gold"})
        self.assertEqual(segment_rebuild(self.segment.pk, now=T3).entered, 1)
        self.assertEqual(members(self.segment), {"cat": T3})
        self.assertEqual([c for _, c, _ in changes(self.segment)], ["entered"] * 3 + ["exited"] * 3 + ["entered"])

    def test_the_number_of_statements_does_not_grow_with_the_segment(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        Customer.objects.filter(pk=self.ann.pk).update(attributes={})
        Customer.objects.filter(pk=self.dan.pk).update(attributes={"tier": "gold"})
        with CaptureQueriesContext(connection) as small:
            self.assertEqual(segment_rebuild(self.segment.pk, now=T2).entered, 1)
        for index in range(20):
            gold(f"more-{index}")
        Customer.objects.filter(pk=self.ben.pk).update(attributes={})
        with CaptureQueriesContext(connection) as large:
            result = segment_rebuild(self.segment.pk, now=T3)
        self.assertEqual((result.entered, result.exited), (20, 1))
        self.assertEqual(len(small.captured_queries), len(large.captured_queries))
        # SAVEPOINT; SELECT … FOR UPDATE the segment; SELECT MAX(change id); DROP TABLE IF EXISTS,
        # CREATE TEMPORARY TABLE and INSERT INTO the target (+ ANALYZE it on PostgreSQL);
        # INSERT exited; INSERT entered; DELETE exited memberships; INSERT entered memberships;
        # SELECT COUNT(*); DROP TABLE the target; UPDATE the segment; RELEASE SAVEPOINT.
        expected = 15 if connection.vendor == "postgresql" else 14
        self.assertEqual(len(large.captured_queries), expected, [q["sql"] for q in large.captured_queries])

    def test_an_unknown_segment_or_a_broken_definition_writes_nothing(self) -> None:
        with self.assertRaises(NotFound):
            segment_rebuild(10**9)
        Segment.objects.filter(pk=self.segment.pk).update(definition={"segment": 10**9})
        with self.assertRaises(RuleInvalid):
            segment_rebuild(self.segment.pk)
        self.assertFalse(SegmentChange.objects.exists())
        self.assertFalse(SegmentMembership.objects.exists())
        self.segment.refresh_from_db()
        self.assertIsNone(self.segment.last_rebuilt_at)

    def test_static_segments_are_not_rebuilt(self) -> None:
        Segment.objects.filter(pk=self.segment.pk).update(kind=Segment.Kind.STATIC)
        with self.assertRaises(RuleInvalid) as raised:
            segment_rebuild(self.segment.pk)
        self.assertEqual(
            [(e.path, e.message) for e in raised.exception.errors], [("", "static segments cannot be rebuilt yet")]
        )
        self.assertFalse(SegmentChange.objects.exists())
        self.segment.refresh_from_db()
        self.assertIsNone(self.segment.last_rebuilt_at)

    def test_the_task_runs_the_rebuild_and_is_safe_to_repeat(self) -> None:
        first = segment_rebuild_task.apply(args=[self.segment.pk]).get()
        self.assertEqual(
            {k: first[k] for k in ("segment_id", "entered", "exited", "members")},
            {"segment_id": self.segment.pk, "entered": 3, "exited": 0, "members": 3},
        )
        again = segment_rebuild_task.apply(args=[self.segment.pk]).get()
        self.assertEqual((again["entered"], again["exited"], again["members"]), (0, 0, 3))
        self.assertEqual(SegmentChange.objects.count(), 3)
        # a segment deleted after its rebuild was queued is nothing to do
        self.assertIsNone(segment_rebuild_task.apply(args=[10**9]).get())

    def test_rebuild_all_queues_one_task_per_segment(self) -> None:
        # The ten ready-made RFM segments of migration 0004 come first; a static one is skipped.
        rfm = list(Segment.objects.filter(name__startswith="RFM: ").order_by("pk").values_list("pk", flat=True))
        self.assertEqual(len(rfm), 10)
        Segment.objects.create(name="list", kind=Segment.Kind.STATIC, definition={})
        # No broker in this test: note what would be sent instead.
        with mock.patch.object(segment_rebuild_task, "delay") as delay:
            self.assertEqual(segment_rebuild_all.apply().get(), 12)
        queued = [call.args[0] for call in delay.call_args_list]
        self.assertEqual(queued, [*rfm, self.segment.pk, self.other.pk])

    def test_beat_rebuilds_every_segment_every_quarter_hour(self) -> None:
        task = PeriodicTask.objects.get(name="segments-rebuild-all")
        self.assertEqual(
            (task.task, task.interval.every, task.interval.period, task.enabled),
            ("campaigns.tasks.segment_rebuild_all", 900, "seconds", True),
        )

    def test_deleting_a_segment_deletes_its_memberships_and_log(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        self.segment.delete()
        self.assertEqual((SegmentMembership.objects.count(), SegmentChange.objects.count()), (0, 0))


class SegmentRebuildAdminTests(TestCase):
    def test_rebuild_now_queues_after_commit(self) -> None:
        admin_user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin_user)
        segment = Segment.objects.create(name="gold", definition=GOLD)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(
                "/admin/campaigns/segment/",
                {"action": "rebuild_now", "_selected_action": [segment.pk]},
                follow=True,
            )
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Queued a rebuild of 1 segment(s).")
        self.assertEqual(len(callbacks), 1)


class SegmentRebuildApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ann, self.ben, self.cat = gold("ann"), gold("ben"), gold("cat")
        self.segment = Segment.objects.create(name="gold", definition=GOLD)
        self.base = f"/api/v1/segments/{self.segment.pk}"

    def test_rebuild_with_wait_runs_now(self) -> None:
        response = self.api.post(f"{self.base}/rebuild?wait=true")
        self.assertEqual(response.status_code, 200, response.json())
        body = response.json()
        self.assertEqual(
            {k: body[k] for k in ("segment_id", "entered", "exited", "members")},
            {"segment_id": self.segment.pk, "entered": 3, "exited": 0, "members": 3},
        )
        detail = self.api.get(f"{self.base}/").json()
        self.assertEqual(detail["member_count"], 3)
        self.assertIsNotNone(detail["last_rebuilt_at"])

    def test_rebuild_without_wait_is_queued_after_commit(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.api.post(f"{self.base}/rebuild/")
        self.assertEqual(response.status_code, 202)
        self.assertEqual(
            response.json(),
            {"segment_id": self.segment.pk, "message": "Rebuild queued; see last_rebuilt_at on the segment."},
        )
        self.assertEqual(len(callbacks), 1)
        self.assertFalse(SegmentChange.objects.exists())  # nothing ran in the request

    def test_a_bad_wait_flag_is_400(self) -> None:
        response = self.api.post(f"{self.base}/rebuild?wait=soon")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "wait")

    def test_unknown_segments_are_404(self) -> None:
        for path in ("members", "changes"):
            self.assertEqual(self.api.get(f"/api/v1/segments/999999/{path}").status_code, 404)
        self.assertEqual(self.api.post("/api/v1/segments/999999/rebuild?wait=true").status_code, 404)
        self.assertEqual(self.api.post("/api/v1/segments/999999/rebuild").status_code, 404)

    def test_members_page_by_customer_id_with_external_ids(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        first = self.api.get(f"{self.base}/members?page_size=2")
        self.assertEqual(first.status_code, 200)
        self.assertEqual(
            first.json()["results"],
            [
                {"customer_id": self.ann.pk, "external_id": "ann", "since": "2026-11-20T12:00:00Z"},
                {"customer_id": self.ben.pk, "external_id": "ben", "since": "2026-11-20T12:00:00Z"},
            ],
        )
        second = self.api.get(first.json()["next"])
        self.assertEqual([row["external_id"] for row in second.json()["results"]], ["cat"])
        self.assertIsNone(second.json()["next"])

    def test_changes_after_a_checkpoint(self) -> None:
        segment_rebuild(self.segment.pk, now=T1)
        everything = self.api.get(f"{self.base}/changes").json()["results"]
        self.assertEqual(
            [(row["external_id"], row["change"], row["at"]) for row in everything],
            [(name, "entered", "2026-11-20T12:00:00Z") for name in ("ann", "ben", "cat")],
        )
        checkpoint = everything[-1]["id"]
        self.assertEqual(self.api.get(f"{self.base}/changes?after={checkpoint}").json()["results"], [])

        Customer.objects.filter(pk=self.ann.pk).update(attributes={})
        dan = gold("dan")
        segment_rebuild(self.segment.pk, now=T2)
        new = self.api.get(f"{self.base}/changes/?after={checkpoint}").json()["results"]
        self.assertEqual(
            [(row["customer_id"], row["external_id"], row["change"]) for row in new],
            [(self.ann.pk, "ann", "exited"), (dan.pk, "dan", "entered")],
        )
        self.assertEqual([row["id"] for row in new], sorted(row["id"] for row in new))
        self.assertGreater(new[0]["id"], checkpoint)
        # paging through the same rows one at a time
        page = self.api.get(f"{self.base}/changes?after={checkpoint}&page_size=1").json()
        self.assertEqual([row["id"] for row in page["results"]], [new[0]["id"]])
        self.assertEqual([row["id"] for row in self.api.get(page["next"]).json()["results"]], [new[1]["id"]])
        self.assertEqual(
            [row["id"] for row in self.api.get(f"{self.base}/changes?after={new[0]['id']}").json()["results"]],
            [new[1]["id"]],
        )

    def test_a_bad_checkpoint_is_400(self) -> None:
        response = self.api.get(f"{self.base}/changes?after=-1")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "after")


@skipUnlessDBFeature("has_select_for_update")
class OverlappingRebuildTests(TransactionTestCase):
    """Two rebuilds of one segment at once, each on its own connection: the second waits
    for the first's row lock and then finds nothing new."""

    def test_overlapping_rebuilds_write_one_set_of_changes(self) -> None:
        for name in ("ann", "ben", "cat"):
            gold(name)
        segment = Segment.objects.create(name="gold", definition=GOLD)
        first_holds_lock, release_first = threading.Event(), threading.Event()
        results: dict[str, object] = {}

        def first() -> None:
            try:
                with transaction.atomic():
                    results["first"] = segment_rebuild(segment.pk, now=T1)
                    first_holds_lock.set()
                    release_first.wait(10)  # keep the transaction (and the lock) open
            finally:
                connection.close()

        def second() -> None:
            try:
                results["second"] = segment_rebuild(segment.pk, now=T1)
            finally:
                connection.close()

        one = threading.Thread(target=first)
        one.start()
        self.assertTrue(first_holds_lock.wait(10))
        two = threading.Thread(target=second)
        two.start()
        time.sleep(0.5)
        self.assertTrue(two.is_alive(), "the second rebuild should wait for the first's lock")
        release_first.set()
        one.join(10)
        two.join(10)

        self.assertEqual((results["first"].entered, results["first"].exited), (3, 0))
        self.assertEqual((results["second"].entered, results["second"].exited, results["second"].members), (0, 0, 3))
        self.assertEqual(SegmentChange.objects.filter(segment=segment).count(), 3)
        self.assertEqual(SegmentMembership.objects.filter(segment=segment).count(), 3)
