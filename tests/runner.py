"""The test runner: says which database and Redis the suite runs against, and at the end
lists every skipped test with its reason, so a run without PostgreSQL or Redis says
plainly what it did not check."""

from __future__ import annotations

import unittest

from django.conf import settings
from django.db import connection
from django.test.runner import DiscoverRunner


class ReportingTestRunner(DiscoverRunner):
    def setup_test_environment(self, **kwargs):
        super().setup_test_environment(**kwargs)
        db = connection.settings_dict
        where = (
            f"PostgreSQL {db.get('HOST') or 'socket'}:{db.get('PORT') or 5432}"
            if connection.vendor == "postgresql"
            else "SQLite"
        )
        redis = settings.REDIS_URL or "not reachable (tests that need Redis or a Celery worker are skipped)"
        print(f"Test services: database {where}; Redis {redis}", flush=True)

    def run_suite(self, suite, **kwargs):
        result = super().run_suite(suite, **kwargs)
        if result.skipped:
            print(f"\nSkipped {len(result.skipped)} test(s):")
            for test, reason in result.skipped:
                print(f"  {test.id()}: {reason}")
        return result

    def suite_result(self, suite, result, **kwargs):
        failures = super().suite_result(suite, result, **kwargs)
        # A plain closing line CI can read: "N passed, N failed, N skipped".
        failed = len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))
        passed = result.testsRun - failed - len(result.skipped) - len(result.expectedFailures)
        print(f"{passed} passed, {failed} failed, {len(result.skipped)} skipped")
        if result.testsRun == 0:
            print("No tests ran: treating this as a failure.")
            return max(failures, 1)
        return failures


__all__ = ["ReportingTestRunner", "unittest"]
