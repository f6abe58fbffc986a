"""API keys: authentication, revocation, per-key rate limits, the key commands, health."""

from __future__ import annotations

import io
from datetime import timedelta
from unittest import mock

from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import TestCase
from django.utils import timezone
from rest_framework.test import APIClient

from marketing.auth import hash_key
from marketing.models import ApiKey, Customer, WorkerHeartbeat
from marketing.services import api_key_create, api_key_revoke
from tests.api_helpers import ApiTestCase, key_client

CUSTOMERS = "/api/v1/customers"


class AuthenticationTests(ApiTestCase):
    def test_it_refuses_a_request_without_a_key(self):
        response = APIClient().get(CUSTOMERS)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json(), {"detail": "Authentication credentials were not provided."})
        self.assertEqual(response["WWW-Authenticate"], 'Token realm="api"')

    def test_it_refuses_an_unknown_key(self):
        response = key_client("mk_" + "x" * 43).get(CUSTOMERS)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json(), {"detail": "Unknown API key."})

    def test_it_refuses_a_revoked_key(self):
        api_key_revoke("crm")
        response = self.api.get(CUSTOMERS)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json(), {"detail": "This API key has been revoked."})

    def test_it_refuses_a_header_with_two_keys(self):
        response = key_client(f"{self.raw_key} {self.raw_key}").get(CUSTOMERS)
        self.assertEqual(response.status_code, 401)
        self.assertIn("exactly one key", response.json()["detail"])

    def test_it_accepts_a_token_key(self):
        response = self.api.get(CUSTOMERS)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["results"], [])

    def test_it_accepts_a_bearer_key(self):
        response = key_client(self.raw_key, keyword="Bearer").get(CUSTOMERS)
        self.assertEqual(response.status_code, 200)

    def test_it_records_when_a_key_was_last_used(self):
        self.assertIsNone(ApiKey.objects.get(name="crm").last_used_at)
        self.api.get(CUSTOMERS)
        self.assertIsNotNone(ApiKey.objects.get(name="crm").last_used_at)

    def test_an_api_key_cannot_use_the_admin(self):
        response = self.api.get("/admin/")
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response["Location"], "/admin/login/?next=/admin/")
        response = self.api.get("/admin/marketing/customer/")
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/admin/login/"))

    def test_a_staff_member_logged_in_to_the_admin_can_read_the_api(self):
        staff = User.objects.create_user("alice", password="pw", is_staff=True)
        client = APIClient()
        client.force_login(staff)
        self.assertEqual(client.get(CUSTOMERS).status_code, 200)

    def test_a_logged_in_user_who_is_not_staff_cannot(self):
        user = User.objects.create_user("bob", password="pw")
        client = APIClient()
        client.force_login(user)
        response = client.get(CUSTOMERS)
        self.assertEqual(response.status_code, 403)


class RateLimitTests(TestCase):
    def setUp(self):
        cache.clear()
        _, self.raw_key = api_key_create("small", rate_limit_per_minute=3)
        _, self.other_key = api_key_create("other", rate_limit_per_minute=3)

    @mock.patch("marketing.auth.time.time", return_value=1_800_000_010.0)
    def test_it_answers_429_after_the_keys_limit(self, _time):
        client = key_client(self.raw_key)
        statuses = [client.get(CUSTOMERS).status_code for _ in range(4)]
        self.assertEqual(statuses, [200, 200, 200, 429])
        response = client.get(CUSTOMERS)
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response["Retry-After"], "50")
        # Another integration has its own count.
        self.assertEqual(key_client(self.other_key).get(CUSTOMERS).status_code, 200)

    def test_the_count_starts_again_in_the_next_minute(self):
        client = key_client(self.raw_key)
        with mock.patch("marketing.auth.time.time", return_value=1_800_000_010.0):
            self.assertEqual([client.get(CUSTOMERS).status_code for _ in range(4)], [200, 200, 200, 429])
        with mock.patch("marketing.auth.time.time", return_value=1_800_000_070.0):
            self.assertEqual(client.get(CUSTOMERS).status_code, 200)

    @mock.patch("marketing.auth.time.time", return_value=1_800_000_010.0)
    def test_the_health_check_is_not_counted(self, _time):
        client = key_client(self.raw_key)
        for _ in range(5):
            self.assertIn(client.get("/api/v1/health").status_code, (200, 503))
        self.assertEqual(client.get(CUSTOMERS).status_code, 200)


class ApiKeyCommandTests(TestCase):
    def setUp(self):
        cache.clear()

    def test_create_api_key_prints_a_key_that_works_and_stores_only_its_hash(self):
        out, err = io.StringIO(), io.StringIO()
        call_command("create_api_key", "crm-sync", "--rate-limit", "50", stdout=out, stderr=err)
        raw_key = out.getvalue().strip()
        self.assertRegex(raw_key, r"^mk_[A-Za-z0-9_-]{43}$")
        self.assertIn("will not be shown again", err.getvalue())

        api_key = ApiKey.objects.get()
        self.assertEqual(api_key.name, "crm-sync")
        self.assertEqual(api_key.rate_limit_per_minute, 50)
        self.assertEqual(api_key.prefix, raw_key[:10])
        self.assertEqual(api_key.key_sha256, hash_key(raw_key))
        stored = [str(getattr(api_key, f.attname)) for f in ApiKey._meta.concrete_fields]
        self.assertFalse(any(raw_key in value for value in stored))
        self.assertFalse(any(raw_key[10:20] in value for value in stored))

        self.assertEqual(key_client(raw_key).get(CUSTOMERS).status_code, 200)

    def test_two_keys_are_never_the_same(self):
        _, first = api_key_create("one")
        _, second = api_key_create("two")
        self.assertNotEqual(first, second)

    def test_create_api_key_refuses_a_name_in_use(self):
        call_command("create_api_key", "crm-sync", stdout=io.StringIO(), stderr=io.StringIO())
        with self.assertRaisesMessage(CommandError, "An API key named 'crm-sync' already exists"):
            call_command("create_api_key", "crm-sync", stdout=io.StringIO(), stderr=io.StringIO())
        self.assertEqual(ApiKey.objects.count(), 1)

    def test_create_api_key_refuses_a_rate_limit_below_one(self):
        with self.assertRaisesMessage(CommandError, "positive number of requests per minute"):
            call_command("create_api_key", "crm-sync", "--rate-limit", "0", stdout=io.StringIO())
        self.assertEqual(ApiKey.objects.count(), 0)

    def test_revoke_api_key_by_name(self):
        _, raw_key = api_key_create("crm-sync")
        out = io.StringIO()
        call_command("revoke_api_key", "crm-sync", stdout=out)
        self.assertIn("Revoked API key 'crm-sync'", out.getvalue())
        self.assertIsNotNone(ApiKey.objects.get().revoked_at)
        response = key_client(raw_key).get(CUSTOMERS)
        self.assertEqual(response.status_code, 401)
        self.assertIn("revoked", response.json()["detail"])

    def test_revoke_api_key_by_the_key_itself(self):
        _, raw_key = api_key_create("crm-sync")
        call_command("revoke_api_key", raw_key, stdout=io.StringIO())
        self.assertIsNotNone(ApiKey.objects.get().revoked_at)

    def test_revoking_twice_keeps_the_first_time(self):
        api_key_create("crm-sync")
        first = api_key_revoke("crm-sync").revoked_at
        self.assertEqual(api_key_revoke("crm-sync").revoked_at, first)
        self.assertEqual(ApiKey.objects.get().revoked_at, first)

    def test_revoke_api_key_of_an_unknown_name(self):
        api_key_create("crm-sync")
        with self.assertRaisesMessage(CommandError, "No API key has that name or value."):
            call_command("revoke_api_key", "nope", stdout=io.StringIO())
        self.assertIsNone(ApiKey.objects.get().revoked_at)


class HealthTests(TestCase):
    def test_it_needs_no_key_and_reports_a_missing_worker_as_degraded(self):
        response = APIClient().get("/api/v1/health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {
                "status": "degraded",
                "database": "ok",
                "broker": "ok",
                "worker": {"last_seen_at": None, "age_seconds": None, "ok": False},
            },
        )

    def test_it_is_ok_with_a_recent_heartbeat_and_names_no_host(self):
        WorkerHeartbeat.objects.create(hostname="celery@secret-host", seen_at=timezone.now() - timedelta(seconds=30))
        response = APIClient().get("/api/v1/health/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(body["status"], "ok")
        self.assertTrue(body["worker"]["ok"])
        self.assertIn(body["worker"]["age_seconds"], (29, 30, 31))
        self.assertNotIn("secret-host", response.content.decode())

    def test_a_stale_heartbeat_is_degraded(self):
        WorkerHeartbeat.objects.create(hostname="w1", seen_at=timezone.now() - timedelta(minutes=10))
        body = APIClient().get("/api/v1/health").json()
        self.assertEqual(body["status"], "degraded")
        self.assertFalse(body["worker"]["ok"])

    def test_an_unreachable_broker_is_503(self):
        with mock.patch("marketing.api._broker_ok", return_value=False):
            response = APIClient().get("/api/v1/health")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["status"], "down")
        self.assertEqual(response.json()["broker"], "error")

    def test_it_shows_no_customer_data(self):
        Customer.objects.create(external_id="c1", email="ann@example.com")
        response = APIClient().get("/api/v1/health")
        self.assertNotIn("example.com", response.content.decode())
