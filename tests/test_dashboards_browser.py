"""The analytics dashboards in a real headless browser (Debian's chromium and
chromedriver, driven by selenium) against a live server: a marketer logs in through the
admin's login form, follows the links a marketer would follow, and reads the numbers and
the charts as the browser rendered them (the same hand-built data and expected numbers as
tests/test_dashboards.py, in tests/dashboard_helpers.py).

Skipped, saying why, only when the browser or its driver is not installed (.ci/run
installs both)."""

from __future__ import annotations

import os
import unittest

from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import override_settings
from django.urls import reverse
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.dashboard_helpers import (
    CAMPAIGN_GROUPS,
    CAMPAIGN_SUMMARY,
    CONVERSION_LIFT,
    DAILY_REVENUE,
    FUNNEL_STEPS,
    REVENUE_LIFT,
    build_campaign,
    build_campaign_without_holdout,
    build_funnel,
    make_marketer,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]
WAIT_SECONDS = 20
# Set to a folder to keep a full-page screenshot of each page the tests check (for a look).
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS", "")


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start;
    # --disable-dev-shm-usage: containers have a small /dev/shm.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(argument)
    # An explicit driver path: selenium must not try to download one (no internet here).
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@unittest.skipIf(
    MISSING,
    f"headless browser tests need Debian's chromium and chromium-driver; missing: {', '.join(MISSING)} "
    "(apt-get install chromium chromium-driver, as .ci/run does)",
)
@override_settings(REPORTING_CURRENCY="USD", REPORTING_TIMEZONE="UTC")
class DashboardBrowserTests(StaticLiveServerTestCase):
    browser: webdriver.Chrome

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            cls.browser = _browser()
        except WebDriverException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.browser.quit()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        make_marketer()
        self.browser.delete_all_cookies()
        self.log_in()

    # -- helpers -------------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.browser.get(f"{self.live_server_url}{path}")

    def wait_for(self, css: str):
        try:
            return WebDriverWait(self.browser, WAIT_SECONDS).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        except TimeoutException:
            # Say where the browser is and what it shows: a timeout alone says nothing.
            body = self.browser.find_element(By.TAG_NAME, "body").text[:2000]
            self.fail(f"no {css} within {WAIT_SECONDS} s at {self.browser.current_url}; the page reads:\n{body}")

    def text(self, css: str) -> str:
        return self.browser.find_element(By.CSS_SELECTOR, css).text

    def row(self, css: str) -> list[str]:
        return [cell.text for cell in self.browser.find_elements(By.CSS_SELECTOR, f"{css} th, {css} td")]

    def log_in(self) -> None:
        self.open(reverse("admin:login"))
        self.browser.find_element(By.ID, "id_username").send_keys("marketer")
        self.browser.find_element(By.ID, "id_password").send_keys("pw")
        self.browser.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()
        self.wait_for("#user-tools")

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            os.makedirs(SCREENSHOTS, exist_ok=True)
            self.browser.save_screenshot(os.path.join(SCREENSHOTS, f"{name}.png"))

    def bars(self, chart_css: str) -> list:
        return self.browser.find_elements(By.CSS_SELECTOR, f"{chart_css} svg rect.bar")

    # -- tests ---------------------------------------------------------------------------

    def test_the_campaign_dashboard_shows_the_numbers_and_charts(self) -> None:
        campaign = build_campaign()
        # From the campaign's own page, as a marketer gets there.
        self.open(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
        dashboard = reverse("admin:analytics_campaign_dashboard", args=[campaign.pk])
        link = self.browser.find_element(By.CSS_SELECTOR, f'a.campaign-link[href="{dashboard}"]')
        self.assertEqual(link.get_attribute("textContent"), "Dashboard")  # shown upper-case by the admin's CSS
        link.click()
        self.wait_for("#campaign-summary")
        self.assertEqual(self.browser.title.split(" | ")[0], "Dashboard: Winter sale")
        self.screenshot("campaign_dashboard")

        self.assertEqual({key: self.text(f"#summary-{key}") for key in CAMPAIGN_SUMMARY}, CAMPAIGN_SUMMARY)
        self.assertEqual(self.row("#group-treated"), CAMPAIGN_GROUPS["treated"])
        self.assertEqual(self.row("#group-control"), CAMPAIGN_GROUPS["control"])
        self.assertEqual(self.text("#lift-conversion-rate"), CONVERSION_LIFT)
        self.assertEqual(self.text("#lift-revenue-per-customer"), REVENUE_LIFT)
        self.assertEqual(self.browser.find_elements(By.ID, "no-holdout"), [])

        # Daily revenue: one bar per day, drawn proportional to the revenue.
        bars = self.bars("#daily-chart")
        self.assertEqual([float(bar.get_attribute("data-value")) for bar in bars], [v for _, v in DAILY_REVENUE])
        heights = [bar.rect["height"] for bar in bars]  # as laid out by the browser, in CSS pixels
        self.assertEqual(heights[0], 0)
        self.assertGreater(heights[1], 100)
        self.assertAlmostEqual(heights[2] / heights[1], 0.5, places=2)

        # Lift: two charts, each a point with an error bar; the intervals span zero (grey).
        points = self.browser.find_elements(By.CSS_SELECTOR, "#lift-charts svg circle.point")
        self.assertEqual([float(point.get_attribute("data-value")) for point in points], [25.0, 32.5])
        error_bars = self.browser.find_elements(By.CSS_SELECTOR, "#lift-charts svg g.error-bar")
        self.assertEqual([bar.get_attribute("stroke") for bar in error_bars], ["#999999", "#999999"])
        for point, bar in zip(points, error_bars, strict=True):
            # The point lies inside its error bar on screen.
            self.assertGreater(bar.rect["width"], 0)
            self.assertTrue(bar.rect["x"] <= point.rect["x"] <= bar.rect["x"] + bar.rect["width"])
        titles = self.browser.find_elements(By.CSS_SELECTOR, "#lift-charts svg > title")
        self.assertEqual(
            [title.get_attribute("textContent") for title in titles],
            [
                "Lift in conversion rate (pp), treated minus control, with its 95% interval",
                "Lift in revenue per customer (USD), treated minus control, with its 95% interval",
            ],
        )
        self.assertEqual(
            [
                row.find_element(By.TAG_NAME, "th").text
                for row in self.browser.find_elements(By.CSS_SELECTOR, "#breakdown-by-creative tbody tr")
            ],
            ["A (email)", "B (email)"],
        )

    def test_a_campaign_without_holdout_says_so(self) -> None:
        campaign = build_campaign_without_holdout()
        self.open(reverse("admin:analytics_campaign_dashboard", args=[campaign.pk]))
        self.wait_for("#campaign-summary")
        self.screenshot("campaign_without_holdout")
        self.assertTrue(self.text("#no-holdout").startswith("No holdout: this campaign has no control group"))
        self.assertEqual(self.text("#summary-sends"), "2")
        self.assertEqual(self.text("#summary-revenue"), "12.00 USD")
        self.assertEqual(self.browser.find_elements(By.ID, "campaign-lift"), [])
        self.assertEqual(self.browser.find_elements(By.CSS_SELECTOR, "svg.chart-lift"), [])

    def test_the_funnel_report_shows_the_step_counts_and_bars(self) -> None:
        build_funnel()
        self.open(reverse("admin:analytics_funnel_changelist"))
        self.browser.find_element(By.LINK_TEXT, "Report").click()
        self.wait_for("#funnel-report-form")
        # Pick the range and a breakdown in the form, as a marketer does.
        for field, value in (("id_date_from", "2026-11-01"), ("id_date_to", "2026-11-30")):
            # Date inputs take typed text in the browser's locale; set the ISO value instead.
            self.browser.execute_script(
                "arguments[0].value = arguments[1];", self.browser.find_element(By.ID, field), value
            )
        Select(self.browser.find_element(By.ID, "id_breakdown")).select_by_value("channel")
        self.browser.find_element(By.CSS_SELECTOR, "#funnel-report-form input[type=submit]").click()
        self.wait_for("#funnel-steps")
        self.screenshot("funnel_report")

        self.assertEqual(self.text("#funnel-range"), "2026-11-01 to 2026-11-30")
        rows = self.browser.find_elements(By.CSS_SELECTOR, "#funnel-steps tbody tr")
        self.assertEqual(
            [
                (cells[1].text, cells[2].text)
                for cells in (row.find_elements(By.CSS_SELECTOR, "th, td") for row in rows)
            ],
            [(step, str(count)) for step, count in FUNNEL_STEPS],
        )
        bars = self.bars("#funnel-chart")
        self.assertEqual([int(bar.get_attribute("data-value")) for bar in bars], [count for _, count in FUNNEL_STEPS])
        widths = [bar.rect["width"] for bar in bars]
        self.assertAlmostEqual(widths[1] / widths[0], 0.5, places=2)
        self.assertAlmostEqual(widths[2] / widths[0], 0.25, places=2)
        self.assertEqual(
            [label.text for label in self.browser.find_elements(By.CSS_SELECTOR, "#funnel-chart text.bar-value")],
            ["4 (100.0%)", "2 (50.0%)", "1 (25.0%)"],
        )
        # The breakdown by channel: every event came from the web.
        self.assertEqual(
            [heading.text for heading in self.browser.find_elements(By.CSS_SELECTOR, "h3.breakdown-value")], ["web"]
        )
