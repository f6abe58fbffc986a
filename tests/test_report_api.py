"""The report API (analytics.api over analytics.reports): answer shapes, 404 and 400s
that name the parameter and write nothing, the cache answering with the same run, a
large report queued (202 + status URL) and computed by a real Celery worker, failures
stored on the run, the task's idempotency, and the nightly schedule."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django_celery_beat.models import PeriodicTask

from analytics.models import Funnel, ReportRun
from analytics.reports import report_request, report_run_execute, reports_refresh_nightly
from analytics.roi import campaign_roi
from analytics.serializers import RoiReportSerializer
from campaigns.models import Campaign
from marketing.models import Customer, Touchpoint
from tests.api_helpers import ApiTestCase, key_client
from tests.celery_helpers import CeleryWorker, requires_celery_worker

E = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
RUN_KEYS = {"id", "status", "status_url", "cached", "computed_at", "duration_ms"}


def small_campaign(name: str = "Small", customers: int = 6) -> Campaign:
    """Customers 0..n-1: every third held out; even ones buy 10.00 the next day."""
    campaign = Campaign.objects.create(name=name, fixed_cost=Decimal("1.00"))
    for i in range(customers):
        who = Customer.objects.create(external_id=f"{name}-{i}")
        kind = "held_out" if i % 3 == 0 else "sent"
        Touchpoint.objects.create(
            customer=who,
            kind=kind,
            channel="email" if kind == "sent" else "",
            campaign_id=campaign.pk,
            occurred_at=E,
            event_id=f"{name}-x{i}",
        )
        if i % 2 == 0:
            Touchpoint.objects.create(
                customer=who,
                kind="purchase",
                occurred_at=E + D,
                order_id=f"{name}-o{i}",
                revenue=Decimal("10.00"),
                event_id=f"{name}-p{i}",
            )
    return campaign


FUNNEL_SPEC = {
    "steps": [{"kind": "sent"}, {"kind": "purchase"}],
    "window": {"days": 7},
    "date_from": "2026-09-25",
    "date_to": "2026-10-05",
}


class RoiApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.campaign = small_campaign()

    def test_the_answer_has_the_report_shape_and_the_run(self):
        response = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}")
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        run = ReportRun.objects.get()
        self.assertEqual(set(body), set(RoiReportSerializer().fields) | {"run"})
        self.assertEqual(
            body["run"],
            {
                "id": run.pk,
                "status": "succeeded",
                "status_url": f"/api/v1/reports/runs/{run.pk}",
                "cached": False,
                "computed_at": run.computed_at.isoformat().replace("+00:00", "Z"),
                "duration_ms": run.duration_ms,
            },
        )
        self.assertEqual(
            (run.kind, run.params, run.status, run.error),
            ("roi", {"campaign": self.campaign.pk, "goal": "purchase", "window_days": 7}, "succeeded", ""),
        )
        # Customers 1, 2, 4, 5 treated (2, 4 buy); 0, 3 held out (0 buys).
        self.assertEqual(
            (body["treated"], body["control"]),
            (
                {
                    "customers": 4,
                    "conversions": 2,
                    "conversion_rate": 0.5,
                    "orders": 2,
                    "revenue": "20.0000",
                    "revenue_per_customer": "5.0000",
                },
                {
                    "customers": 2,
                    "conversions": 1,
                    "conversion_rate": 0.5,
                    "orders": 1,
                    "revenue": "10.0000",
                    "revenue_per_customer": "5.0000",
                },
            ),
        )
        self.assertEqual(set(body["lift"]), {"conversion_rate", "revenue_per_customer"})
        for item in body["lift"].values():
            self.assertTrue({"absolute", "relative", "ci_low", "ci_high", "p_value"} <= set(item), item)
        self.assertEqual((body["cost"], body["roas"], body["roi"], body["cpa"]), ("1.0000", 20.0, 19.0, "0.5000"))
        self.assertEqual(body, {**campaign_roi(self.campaign.pk), "run": body["run"]})

    def test_the_cache_answers_with_the_same_run_and_refresh_computes_again(self):
        first = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}").json()["run"]
        # Spelled differently: the campaign's own goal and window are the same question.
        again = self.api.get(f"/api/v1/reports/roi/?window_days=7&campaign={self.campaign.pk}&goal=purchase")
        again = again.json()["run"]
        self.assertEqual((again["id"], again["cached"]), (first["id"], True))
        self.assertEqual(ReportRun.objects.count(), 1)
        fresh = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}&refresh=true").json()["run"]
        self.assertEqual((fresh["cached"], fresh["status"]), (False, "succeeded"))
        self.assertNotEqual(fresh["id"], first["id"])
        # An override is another question.
        other = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}&window_days=1").json()["run"]
        self.assertNotIn(other["id"], (first["id"], fresh["id"]))
        self.assertEqual(ReportRun.objects.count(), 3)

    @override_settings(REPORT_CACHE_SECONDS=0)
    def test_a_stale_run_is_not_reused(self):
        first = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}").json()["run"]
        second = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}").json()["run"]
        self.assertNotEqual(first["id"], second["id"])

    def test_an_unknown_campaign_is_404_with_a_message(self):
        response = self.api.get("/api/v1/reports/roi?campaign=987654")
        self.assertEqual((response.status_code, response.json()), (404, {"detail": "Campaign 987654 does not exist."}))
        self.assertEqual(ReportRun.objects.count(), 0)

    def test_bad_parameters_are_400_naming_the_parameter(self):
        cases = {
            "": ("campaign", "is required (a campaign id)"),
            "campaign=abc": ("campaign", f"must be a whole number from 1 to {2**63 - 1}"),
            "campaign=0": ("campaign", f"must be a whole number from 1 to {2**63 - 1}"),
            f"campaign={self.campaign.pk}&window_days=-1": ("window_days", "must be a whole number from 0 to 365"),
            f"campaign={self.campaign.pk}&window_days=1.5": ("window_days", "must be a whole number from 0 to 365"),
            f"campaign={self.campaign.pk}&goal=Bad%20Kind": (
                "goal",
                "must be a touchpoint kind (a lower-case slug: letters, digits, '_', '-', '.')",
            ),
            f"campaign={self.campaign.pk}&refresh=maybe": ("refresh", "must be true or false"),
        }
        for query, (field, message) in cases.items():
            with self.subTest(query=query):
                response = self.api.get(f"/api/v1/reports/roi?{query}")
                self.assertEqual(response.status_code, 400, response.content)
                self.assertEqual(response.json()["errors"], [{"row": None, "field": field, "message": message}])
        self.assertEqual(ReportRun.objects.count(), 0)

    def test_it_needs_a_key(self):
        response = key_client("wrong").get(f"/api/v1/reports/roi?campaign={self.campaign.pk}")
        self.assertIn(response.status_code, (401, 403))
        self.assertEqual(ReportRun.objects.count(), 0)

    @override_settings(REPORT_SYNC_MAX_MESSAGES=5)
    def test_a_large_report_is_queued_with_a_status_url(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}")
        self.assertEqual(response.status_code, 202, response.content)
        run = ReportRun.objects.get()
        url = f"/api/v1/reports/runs/{run.pk}"
        self.assertEqual(response["Location"], url)
        self.assertEqual(
            response.json(),
            {
                "run": {
                    "id": run.pk,
                    "status": "queued",
                    "status_url": url,
                    "cached": False,
                    "computed_at": None,
                    "duration_ms": None,
                },
                "message": f"The report is being computed; GET {url} for its status and result.",
            },
        )
        self.assertEqual(len(callbacks), 1)  # the task, enqueued after commit
        # Asked again while queued: the same run, not a second task.
        with self.captureOnCommitCallbacks(execute=False) as again:
            response = self.api.get(f"/api/v1/reports/roi?campaign={self.campaign.pk}")
        self.assertEqual((response.status_code, response.json()["run"]["id"], len(again)), (202, run.pk, 0))
        status = self.api.get(url).json()
        self.assertEqual((status["status"], status["result"], status["kind"]), ("queued", None, "roi"))


class AttributionApiTests(ApiTestCase):
    def test_the_answer_and_its_parameters(self):
        campaign = small_campaign()
        response = self.api.get("/api/v1/reports/attribution?model=linear&from=2026-10-01&to=2026-10-03")
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(
            {k: body[k] for k in ("model", "window_days", "conversions", "attributed", "unattributed")},
            {
                "model": "linear",
                "window_days": 30,
                "conversions": 3,
                "attributed": {"conversions": 2, "revenue": "20.00"},
                "unattributed": {"conversions": 1, "revenue": "10.00"},
            },
        )
        self.assertEqual(
            body["by_campaign"],
            [{"campaign": campaign.pk, "label": "Small", "conversions": "2.0000", "revenue": "20.00"}],
        )
        self.assertEqual(
            ReportRun.objects.get().params,
            {"model": "linear", "from": "2026-10-01", "to": "2026-10-03", "window_days": 30, "goal": "purchase"},
        )

    def test_bad_parameters_are_400_naming_the_parameter(self):
        cases = {
            "model=u_shaped&from=2026-10-01&to=2026-10-02": (
                "model",
                "must be one of last_touch, first_touch, linear, time_decay, position_based",
            ),
            "to=2026-10-02": ("from", "is required (a date, YYYY-MM-DD)"),
            "from=2026-10-01": ("to", "is required (a date, YYYY-MM-DD)"),
            "from=2026-13-01&to=2026-10-02": ("from", "must be a date (YYYY-MM-DD)"),
            "from=2026-10-05&to=2026-10-02": ("to", "must not be before from"),
            "from=2026-10-01&to=2026-10-02&window_days=0": ("window_days", "must be a whole number from 1 to 365"),
            "model=time_decay&from=2026-10-01&to=2026-10-02&half_life_days=0": (
                "half_life_days",
                "must be a number more than 0.0 and at most 365.0",
            ),
            "model=time_decay&from=2026-10-01&to=2026-10-02&half_life_days=nan": (
                "half_life_days",
                "must be a number more than 0.0 and at most 365.0",
            ),
        }
        for query, (field, message) in cases.items():
            with self.subTest(query=query):
                response = self.api.get(f"/api/v1/reports/attribution?{query}")
                self.assertEqual(response.status_code, 400, response.content)
                self.assertEqual(response.json()["errors"], [{"row": None, "field": field, "message": message}])
        self.assertEqual(ReportRun.objects.count(), 0)


class FunnelApiTests(ApiTestCase):
    def test_an_inline_spec_and_a_saved_funnel(self):
        small_campaign()
        response = self.post_json("/api/v1/reports/funnel", {"spec": FUNNEL_SPEC})
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(set(body), {"run", "result"})
        self.assertEqual([step["customers"] for step in body["result"]["steps"]], [4, 2])
        funnel = Funnel.objects.create(name="Sent to purchase", spec=FUNNEL_SPEC)
        saved = self.post_json("/api/v1/reports/funnel", {"funnel": funnel.pk})
        self.assertEqual(saved.status_code, 200, saved.content)
        run = ReportRun.objects.get(pk=saved.json()["run"]["id"])
        self.assertEqual((run.funnel_id, run.params["funnel"]), (funnel.pk, funnel.pk))
        self.assertEqual(saved.json()["result"]["steps"], body["result"]["steps"])

    def test_bad_requests(self):
        response = self.post_json("/api/v1/reports/funnel", {"spec": {"steps": [{"kind": "visit"}]}})
        self.assertEqual(response.status_code, 400)
        self.assertIn("spec.steps", [error["field"] for error in response.json()["errors"]])
        response = self.post_json("/api/v1/reports/funnel", {})
        self.assertEqual(response.json()["errors"][0]["field"], "spec")
        response = self.post_json("/api/v1/reports/funnel", {"funnel": 1, "spec": FUNNEL_SPEC})
        self.assertEqual((response.status_code, response.json()["errors"][0]["field"]), (400, "funnel"))
        response = self.post_json("/api/v1/reports/funnel", {"funnel": 987654})
        self.assertEqual((response.status_code, response.json()), (404, {"detail": "Funnel 987654 does not exist."}))
        self.assertEqual(ReportRun.objects.count(), 0)


class ReportRunTests(ApiTestCase):
    def test_the_status_of_a_run_and_an_unknown_one(self):
        campaign = small_campaign()
        run = report_request("roi", {"campaign": campaign.pk})
        body = self.api.get(f"/api/v1/reports/runs/{run.pk}").json()
        self.assertEqual(
            {k: body[k] for k in ("id", "kind", "status", "params", "funnel", "error", "status_url")},
            {
                "id": run.pk,
                "kind": "roi",
                "status": "succeeded",
                "params": {"campaign": campaign.pk, "goal": "purchase", "window_days": 7},
                "funnel": None,
                "error": "",
                "status_url": f"/api/v1/reports/runs/{run.pk}",
            },
        )
        self.assertEqual(body["result"]["treated"]["customers"], 4)
        self.assertEqual(self.api.get("/api/v1/reports/runs/987654").status_code, 404)

    def test_a_failure_is_stored_with_its_error_and_the_task_is_idempotent(self):
        campaign = small_campaign()
        run = report_request("roi", {"campaign": campaign.pk}, sync=False)
        self.assertEqual(run.status, "queued")
        Campaign.objects.filter(pk=campaign.pk).delete()  # gone before the worker got to it
        done = report_run_execute(run.pk)
        self.assertEqual(
            (done.status, done.error, done.result),
            ("failed", f"NotFound: Campaign {campaign.pk} does not exist.", None),
        )
        self.assertIsNotNone(done.computed_at)
        # Run again (a redelivered task): taken by nobody, unchanged.
        again = report_run_execute(run.pk)
        self.assertEqual((again.status, again.computed_at, again.error), ("failed", done.computed_at, done.error))
        response = self.api.get(f"/api/v1/reports/runs/{run.pk}")
        self.assertEqual(response.json()["status"], "failed")

    def test_a_statement_timeout_fails_the_run_and_says_so(self):
        if connection.vendor != "postgresql":
            self.skipTest("statement timeouts are PostgreSQL's")
        campaign = small_campaign(customers=300)
        with override_settings(REPORT_STATEMENT_TIMEOUT_MS=1):
            run = report_request("roi", {"campaign": campaign.pk}, sync=True)
        self.assertEqual(run.status, "failed")
        self.assertEqual(
            run.error,
            "OperationalError: The report ran longer than the statement timeout (1 ms) and was stopped.",
        )
        response = self.api.get(f"/api/v1/reports/roi?campaign={campaign.pk}&refresh=true")
        self.assertEqual(response.status_code, 200)  # the timeout was the run's only


class NightlyTests(TestCase):
    def test_the_nightly_refresh_queues_running_and_recent_campaigns_and_saved_funnels(self):
        running = small_campaign("Running")
        Campaign.objects.filter(pk=running.pk).update(status="running")
        recent = small_campaign("Recent")
        Campaign.objects.filter(pk=recent.pk).update(status="completed", finished_at=E.replace(year=2099))
        old = small_campaign("Old")
        Campaign.objects.filter(pk=old.pk).update(status="completed", finished_at=E.replace(year=2000))
        funnel = Funnel.objects.create(name="Saved", spec=FUNNEL_SPEC)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            queued = reports_refresh_nightly()
        runs = list(ReportRun.objects.order_by("id"))
        self.assertEqual(queued, {"roi": [runs[0].pk, runs[1].pk], "funnel": [runs[2].pk]})
        self.assertEqual(
            [(r.kind, r.params.get("campaign"), r.funnel_id, r.status) for r in runs],
            [
                ("roi", running.pk, None, "queued"),
                ("roi", recent.pk, None, "queued"),
                ("funnel", None, funnel.pk, "queued"),
            ],
        )
        self.assertEqual(len(callbacks), 3)

    def test_the_beat_schedule_exists(self):
        task = PeriodicTask.objects.select_related("crontab").get(name="reports-refresh-nightly")
        self.assertEqual(
            (task.task, task.enabled, task.crontab.minute, task.crontab.hour),
            ("analytics.tasks.reports_refresh_nightly", True, "30", "3"),
        )


@requires_celery_worker
class QueuedReportOnARealWorkerTests(TransactionTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.worker = CeleryWorker(queues=["default"])
        cls.addClassCleanup(cls.worker.stop)
        cls.worker.start()

    @override_settings(REPORT_SYNC_MAX_MESSAGES=5)
    def test_a_queued_report_is_computed_by_the_worker(self):
        from marketing.services import api_key_create

        campaign = small_campaign()
        _, raw_key = api_key_create("crm")
        api = key_client(raw_key)
        response = api.get(f"/api/v1/reports/roi?campaign={campaign.pk}")
        self.assertEqual(response.status_code, 202, response.content)
        url = response.json()["run"]["status_url"]
        deadline = time.monotonic() + 120  # generous: the CI box may be busy
        body = api.get(url).json()
        while body["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            body = api.get(url).json()
        self.assertEqual(body["status"], "succeeded", f"{body}\n{self.worker.output()}")
        self.assertEqual(body["result"], campaign_roi(campaign.pk))
        self.assertGreaterEqual(body["duration_ms"], 0)
        # Now the report answers from the cache with that run.
        cached = api.get(f"/api/v1/reports/roi?campaign={campaign.pk}")
        self.assertEqual(
            (cached.status_code, cached.json()["run"]["id"], cached.json()["run"]["cached"]), (200, body["id"], True)
        )
