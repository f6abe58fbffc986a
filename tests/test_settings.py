"""Settings come from the environment. Each case loads them in a fresh Python process with
exactly the environment it names (nothing inherited from the developer's shell), as
`make run` or a worker would."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import SimpleTestCase, TestCase, override_settings

from marketing.envtools import tcp_reachable

# Prints what the tests look at, or the error that stopped the settings from loading.
PROBE = """
import json
try:
    import django
    django.setup()
    from django.conf import settings
    db = settings.DATABASES["default"]
    print(json.dumps({
        "DEBUG": settings.DEBUG,
        "ENGINE": db["ENGINE"],
        "DB_NAME": db["NAME"],
        "DB_HOST": db.get("HOST", ""),
        "DB_PORT": db.get("PORT", ""),
        "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
        "SECRET_KEY_SET": bool(settings.SECRET_KEY),
        "BROKER": settings.CELERY_BROKER_URL,
        "BROKER_OPTIONS": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "CACHE": settings.CACHES["default"]["BACKEND"],
        "CACHE_LOCATION": settings.CACHES["default"].get("LOCATION", ""),
        "REPORTING_CURRENCY": settings.REPORTING_CURRENCY,
        "REPORTING_TIMEZONE": settings.REPORTING_TIMEZONE,
        "CURRENCY_RATES": {code: str(rate) for code, rate in settings.CURRENCY_RATES.items()},
        "QUEUES": [queue.name for queue in settings.CELERY_TASK_QUEUES],
        "DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "ROUTES": settings.CELERY_TASK_ROUTES,
        "STATIC_STORAGE": settings.STORAGES["staticfiles"]["BACKEND"],
    }))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""

REPO = Path(settings.BASE_DIR)
PRODUCTION = {
    "DATABASE_URL": "postgres://crm:pw@db.internal:6432/marketing",
    "REDIS_URL": "redis://cache.internal:6379/2",
    "SECRET_KEY": "a-long-random-production-secret",
    "ALLOWED_HOSTS": "crm.example.com, api.example.com",
}


def load_settings(env: dict[str, str], *, test_mode: bool = False) -> dict:
    """The settings a process started with exactly `env` would see. `test_mode` loads them
    the way `manage.py test` does (argv[1] == "test")."""
    with tempfile.TemporaryDirectory() as var_dir:
        full_env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "marketing.settings", "VAR_DIR": var_dir}
        command = [sys.executable, "-c", PROBE] + (["test"] if test_mode else [])
        done = subprocess.run(
            command, cwd=REPO, env={**full_env, **env}, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise AssertionError(f"settings probe failed ({done.returncode}):\n{done.stderr}")
        loaded = json.loads(done.stdout.strip().splitlines()[-1])
        # Paths under the temporary VAR_DIR, relative to it, so tests can compare them.
        return json.loads(json.dumps(loaded).replace(var_dir, "$VAR_DIR"))


class EmbeddedDefaultsTests(SimpleTestCase):
    def test_with_no_environment_it_runs_on_sqlite_and_the_filesystem_broker(self):
        loaded = load_settings({})

        self.assertEqual(loaded["ENGINE"], "django.db.backends.sqlite3")
        self.assertEqual(loaded["DB_NAME"], "$VAR_DIR/marketing.sqlite3")
        self.assertIs(loaded["DEBUG"], True)
        self.assertEqual(loaded["ALLOWED_HOSTS"], ["localhost", "127.0.0.1", "[::1]"])
        self.assertEqual(loaded["BROKER"], "filesystem://")
        self.assertEqual(
            loaded["BROKER_OPTIONS"],
            {
                "data_folder_in": "$VAR_DIR/celery-broker",
                "data_folder_out": "$VAR_DIR/celery-broker",
                "processed_folder": "$VAR_DIR/celery-broker/processed",
                "control_folder": "$VAR_DIR/celery-broker/control",
                "store_processed": False,
            },
        )
        self.assertIsNone(loaded["RESULT_BACKEND"])
        self.assertEqual(loaded["CACHE"], "django.core.cache.backends.locmem.LocMemCache")
        self.assertEqual(loaded["QUEUES"], ["default", "send", "gpu"])
        self.assertEqual(loaded["DEFAULT_QUEUE"], "default")
        self.assertEqual((loaded["REPORTING_CURRENCY"], loaded["REPORTING_TIMEZONE"]), ("USD", "UTC"))
        self.assertEqual(loaded["CURRENCY_RATES"], {})

    def test_debug_can_be_turned_off_locally_only_with_a_secret_key(self):
        loaded = load_settings({"DEBUG": "false"})

        self.assertEqual(loaded["error"], "ImproperlyConfigured")
        self.assertIn("SECRET_KEY is required", loaded["message"])

    def test_a_debug_value_that_is_not_a_boolean_is_refused(self):
        loaded = load_settings({"DEBUG": "maybe"})

        self.assertEqual(
            loaded, {"error": "ImproperlyConfigured", "message": "DEBUG='maybe' is not a boolean (use true/false)"}
        )


class ProductionSettingsTests(SimpleTestCase):
    def test_database_and_redis_urls_without_a_secret_key_are_refused(self):
        loaded = load_settings({"DATABASE_URL": PRODUCTION["DATABASE_URL"], "REDIS_URL": PRODUCTION["REDIS_URL"]})

        self.assertEqual(loaded["error"], "ImproperlyConfigured")
        self.assertIn("SECRET_KEY is required", loaded["message"])

    def test_a_secret_key_without_allowed_hosts_is_refused(self):
        env = {name: PRODUCTION[name] for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}

        loaded = load_settings(env)

        self.assertEqual(loaded["error"], "ImproperlyConfigured")
        self.assertIn("ALLOWED_HOSTS is required", loaded["message"])

    def test_with_everything_set_it_runs_on_postgresql_and_redis_with_debug_off(self):
        loaded = load_settings(PRODUCTION)

        self.assertNotIn("error", loaded)
        self.assertEqual(loaded["ENGINE"], "django.db.backends.postgresql")
        self.assertEqual((loaded["DB_NAME"], loaded["DB_HOST"], loaded["DB_PORT"]), ("marketing", "db.internal", 6432))
        self.assertIs(loaded["DEBUG"], False)
        self.assertEqual(loaded["ALLOWED_HOSTS"], ["crm.example.com", "api.example.com"])
        self.assertEqual(loaded["BROKER"], PRODUCTION["REDIS_URL"])
        self.assertEqual(loaded["RESULT_BACKEND"], PRODUCTION["REDIS_URL"])
        self.assertEqual(loaded["CACHE"], "django.core.cache.backends.redis.RedisCache")
        self.assertEqual(loaded["CACHE_LOCATION"], PRODUCTION["REDIS_URL"])
        self.assertEqual(loaded["QUEUES"], ["default", "send", "gpu"])
        self.assertEqual(loaded["STATIC_STORAGE"], "whitenoise.storage.CompressedManifestStaticFilesStorage")

    def test_a_database_url_that_is_not_postgresql_is_refused(self):
        loaded = load_settings({**PRODUCTION, "DATABASE_URL": "mysql://crm@db.internal/marketing"})

        self.assertEqual(loaded["error"], "ImproperlyConfigured")
        self.assertIn("DATABASE_URL must be a PostgreSQL URL", loaded["message"])


class MarketingSettingsTests(SimpleTestCase):
    def test_reporting_currency_timezone_and_rates_are_read(self):
        loaded = load_settings(
            {"REPORTING_CURRENCY": "eur", "REPORTING_TIMEZONE": "Europe/Berlin", "CURRENCY_RATES": "usd=0.92, GBP=1.17"}
        )

        self.assertEqual(loaded["REPORTING_CURRENCY"], "EUR")
        self.assertEqual(loaded["REPORTING_TIMEZONE"], "Europe/Berlin")
        self.assertEqual(loaded["CURRENCY_RATES"], {"USD": "0.92", "GBP": "1.17"})

    def test_a_bad_currency_rate_is_refused_naming_the_bad_item(self):
        for bad in ("EUR=abc", "EUR=-1", "EURO=1.1", "EUR"):
            with self.subTest(bad=bad):
                loaded = load_settings({"CURRENCY_RATES": f"GBP=1.17,{bad}"})

                self.assertEqual(
                    loaded,
                    {
                        "error": "ImproperlyConfigured",
                        "message": f"CURRENCY_RATES: {bad!r} is not CODE=positive-rate (e.g. EUR=1.08)",
                    },
                )


class QueueNameTests(SimpleTestCase):
    def test_every_queue_and_route_carries_the_prefix(self):
        loaded = load_settings({"CELERY_QUEUE_PREFIX": "staging-"})

        self.assertEqual(loaded["QUEUES"], ["staging-default", "staging-send", "staging-gpu"])
        self.assertEqual(loaded["DEFAULT_QUEUE"], "staging-default")
        self.assertEqual(
            loaded["ROUTES"],
            {"campaigns.tasks.send_*": {"queue": "staging-send"}, "mlcore.tasks.train_*": {"queue": "staging-gpu"}},
        )

    def test_tests_get_their_own_queues_and_redis_database_by_default(self):
        loaded = load_settings({"TEST_DATABASE_URL": "sqlite"}, test_mode=True)

        local_redis = "redis://127.0.0.1:6379/15"
        self.assertEqual(loaded["QUEUES"], ["test-default", "test-send", "test-gpu"])
        self.assertEqual(loaded["BROKER"], local_redis if tcp_reachable(local_redis, 6379) else "filesystem://")

    def test_an_explicit_test_redis_url_is_used_even_when_nothing_answers_there(self):
        # CI names its Redis: if it is down the Celery tests must fail, not quietly skip.
        loaded = load_settings(
            {"TEST_DATABASE_URL": "sqlite", "TEST_REDIS_URL": "redis://127.0.0.1:1/15"}, test_mode=True
        )

        self.assertEqual(loaded["BROKER"], "redis://127.0.0.1:1/15")

    def test_test_redis_url_none_runs_the_tests_without_redis(self):
        loaded = load_settings({"TEST_DATABASE_URL": "sqlite", "TEST_REDIS_URL": "none"}, test_mode=True)

        self.assertEqual(
            (loaded["BROKER"], loaded["CACHE"]), ("filesystem://", "django.core.cache.backends.locmem.LocMemCache")
        )


class EnvExampleTests(SimpleTestCase):
    def test_env_example_lists_every_variable_the_settings_read(self):
        read = set()
        for package in ("marketing", "mlcore", "campaigns", "analytics"):
            for source in (REPO / package).rglob("*.py"):
                read |= set(
                    re.findall(r"\benv_(?:str|bool|int|list|rates)\(\s*[\"']([A-Z0-9_]+)[\"']", source.read_text())
                )
        listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), flags=re.M))

        self.assertIn("DATABASE_URL", read)  # the pattern still finds what settings.py reads
        self.assertEqual(read - listed, set())


class EnsureAdminTests(TestCase):
    @override_settings(DEBUG=True)
    def test_it_creates_the_dev_superuser_when_there_is_none(self):
        out = io.StringIO()

        call_command("ensure_admin", stdout=out)

        admin = get_user_model().objects.get()
        self.assertEqual((admin.username, admin.is_superuser, admin.is_staff), ("admin", True, True))
        self.assertTrue(admin.check_password("admin"))
        self.assertIn("username 'admin', password 'admin'", out.getvalue())

    @override_settings(DEBUG=True)
    def test_it_leaves_an_existing_superuser_alone(self):
        get_user_model().objects.create_superuser("owner", "owner@example.com", "a-real-password")

        out = io.StringIO()

        call_command("ensure_admin", stdout=out)

        self.assertEqual(list(get_user_model().objects.values_list("username", flat=True)), ["owner"])
        self.assertIn("superuser(s) already exist: owner", out.getvalue())

    @override_settings(DEBUG=False)
    def test_it_refuses_to_run_with_debug_off(self):
        with self.assertRaisesMessage(CommandError, "ensure_admin only runs with DEBUG on"):
            call_command("ensure_admin")

        self.assertFalse(get_user_model().objects.exists())
