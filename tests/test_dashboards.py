"""The analytics admin pages with the Django test client: the campaign dashboard (numbers,
lift text, charts, no-holdout message, goal/window overrides, bad input), the funnel admin
(spec checked on save) and report (steps, bars, breakdown, bad input), the report runs
(read-only) and who may see them. The same pages in a real browser:
tests/test_dashboards_browser.py."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

from django.test import SimpleTestCase, TestCase, override_settings
from django.urls import reverse

from analytics.dashboards import campaign_dashboard
from analytics.models import Funnel, ReportRun
from analytics.reports import report_run_execute
from campaigns.models import Campaign
from marketing.models import Customer, Touchpoint
from tests.api_helpers import T0
from tests.dashboard_helpers import (
    CAMPAIGN_GROUPS,
    CAMPAIGN_SUMMARY,
    CONVERSION_LIFT,
    CREATIVE_ROWS,
    DAILY_REVENUE,
    DAY,
    FUNNEL_STEPS,
    REVENUE_LIFT,
    build_campaign,
    build_campaign_without_holdout,
    build_funnel,
    grant,
    make_marketer,
)

SVG = "{http://www.w3.org/2000/svg}"


def dashboard_url(campaign) -> str:
    return reverse("admin:analytics_campaign_dashboard", args=[campaign.pk])


def report_url(funnel) -> str:
    return reverse("admin:analytics_funnel_report", args=[funnel.pk])


def element(html: str, element_id: str) -> str:
    """The inner HTML of the element with that id (a small helper: the pages are ours)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no element #{element_id}"
    return match.group(2)


def cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row_html, re.S)]


def svgs(html: str, chart_class: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(rf'<svg [^>]*class="chart {chart_class}".*?</svg>', html, re.S)]


def marks(svg: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [mark for mark in svg.iter(f"{SVG}{tag}") if mark.get("class") == cls]


@override_settings(REPORTING_CURRENCY="USD")
class DashboardShapingTests(SimpleTestCase):
    def test_days_without_sends_or_revenue_show_as_zero_bars(self) -> None:
        shown = campaign_dashboard(
            {"daily": [{"date": "2026-11-01", "revenue": "5.0000"}, {"date": "2026-11-04", "revenue": "-2.0000"}]}
        )
        (daily,) = svgs(shown["daily_chart"], "chart-daily")
        bars = marks(daily, "rect", "bar")
        self.assertEqual(
            [bar.find(f"{SVG}title").text for bar in bars],
            ["2026-11-01: 5.00", "2026-11-02: 0.00", "2026-11-03: 0.00", "2026-11-04: -2.00"],
        )

    def test_an_empty_report_shows_dashes_not_errors(self) -> None:
        shown = campaign_dashboard({})
        self.assertEqual(
            shown["summary"],
            [
                ("sends", "—"),
                ("conversions", "—"),
                ("revenue", "—"),
                ("cost", "—"),
                ("ROI", "—"),
                ("ROAS", "—"),
                ("CPA", "—"),
            ],
        )
        self.assertFalse(shown["has_holdout"])
        self.assertEqual((shown["lift_charts"], shown["comparison_charts"]), ([], []))

    def test_the_treated_and_control_charts_are_captioned(self) -> None:
        shown = campaign_dashboard(
            {
                "treated": {"customers": 4, "conversion_rate": 0.5, "revenue_per_customer": "37.5000"},
                "control": {"customers": 4, "conversion_rate": 0.25, "revenue_per_customer": "5.0000"},
            }
        )
        self.assertEqual(
            [caption for caption, _ in shown["comparison_charts"]],
            ["Conversion rate", "Revenue per customer (USD)"],
        )


@override_settings(REPORTING_CURRENCY="USD", REPORTING_TIMEZONE="UTC")
class CampaignDashboardTests(TestCase):
    def setUp(self) -> None:
        self.marketer = make_marketer()
        self.client.force_login(self.marketer)
        self.campaign = build_campaign()

    def test_it_shows_the_campaigns_numbers(self) -> None:
        response = self.client.get(dashboard_url(self.campaign))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        shown = {key: element(html, f"summary-{key}") for key in CAMPAIGN_SUMMARY}
        self.assertEqual(shown, CAMPAIGN_SUMMARY)
        self.assertEqual(cells(element(html, "group-treated")), CAMPAIGN_GROUPS["treated"])
        self.assertEqual(cells(element(html, "group-control")), CAMPAIGN_GROUPS["control"])
        self.assertEqual(element(html, "lift-conversion-rate"), CONVERSION_LIFT)
        self.assertEqual(element(html, "lift-revenue-per-customer"), REVENUE_LIFT)
        self.assertEqual(
            element(html, "lift-conversion-rate-relative"), "relative +100.0% (95% CI -71.8% to +1,319.8%)"
        )
        self.assertEqual(element(html, "incremental-revenue"), "+130.00 USD")  # 4 treated x 32.50
        self.assertEqual(element(html, "incremental-roi"), "incremental ROI 160.0%")  # (130 - 50) / 50
        self.assertEqual(element(html, "dashboard-goal"), "purchase")
        self.assertNotIn('id="no-holdout"', html)

    def test_it_breaks_down_by_creative_and_channel(self) -> None:
        html = self.client.get(dashboard_url(self.campaign)).content.decode()
        rows = re.findall(r"<tr>(.*?)</tr>", element(html, "breakdown-by-creative"), re.S)
        self.assertEqual([cells(row) for row in rows[1:]], CREATIVE_ROWS)
        rows = re.findall(r"<tr>(.*?)</tr>", element(html, "breakdown-by-channel"), re.S)
        self.assertEqual(
            [cells(row) for row in rows[1:]],
            [["email", "4", "2", "150.00 USD", "0.20 USD", "74,900.0%", "750.00x", "0.10 USD"]],
        )

    def test_the_charts_show_the_lift_intervals_and_daily_revenue(self) -> None:
        html = self.client.get(dashboard_url(self.campaign)).content.decode()
        lift = svgs(html, "chart-lift")
        self.assertEqual(len(lift), 2)
        conversion, revenue = ((marks(svg, "circle", "point")[0], marks(svg, "g", "error-bar")[0]) for svg in lift)
        self.assertEqual(float(conversion[0].get("data-value")), 25.0)  # percentage points
        self.assertEqual(
            (round(float(conversion[1].get("data-low")), 2), round(float(conversion[1].get("data-high")), 2)),
            (-31.96, 65.53),
        )
        self.assertEqual(float(revenue[0].get("data-value")), 32.5)
        self.assertEqual(
            (round(float(revenue[1].get("data-low")), 2), round(float(revenue[1].get("data-high")), 2)),
            (-41.91, 106.91),
        )
        conversion_bars, revenue_bars = (marks(svg, "rect", "bar") for svg in svgs(html, "chart-bars"))
        self.assertEqual([float(bar.get("data-value")) for bar in conversion_bars], [0.5, 0.25])
        self.assertEqual([float(bar.get("width")) for bar in conversion_bars], [370.0, 185.0])
        self.assertEqual([float(bar.get("data-value")) for bar in revenue_bars], [37.5, 5.0])
        self.assertEqual([float(bar.get("width")) for bar in revenue_bars], [370.0, round(370 * 5 / 37.5, 2)])
        (daily,) = svgs(html, "chart-daily")
        bars = marks(daily, "rect", "bar")
        self.assertEqual([float(bar.get("data-value")) for bar in bars], [value for _, value in DAILY_REVENUE])
        self.assertEqual([float(bar.get("height")) for bar in bars], [0.0, 168.0, 84.0])  # proportional
        self.assertEqual(
            [bar.find(f"{SVG}title").text for bar in bars],
            ["2026-11-01: 0.00", "2026-11-02: 100.00", "2026-11-03: 50.00"],
        )

    def test_a_campaign_without_holdout_says_so(self) -> None:
        imported = build_campaign_without_holdout()
        response = self.client.get(dashboard_url(imported))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertIn("No holdout: this campaign has no control group", element(html, "no-holdout"))
        self.assertEqual(element(html, "summary-sends"), "2")
        self.assertEqual(element(html, "summary-conversions"), "1")
        self.assertEqual(element(html, "summary-revenue"), "12.00 USD")
        self.assertEqual(element(html, "summary-roi"), "—")  # no cost: ROI undefined
        self.assertEqual(cells(element(html, "group-control")), ["control", "0", "0", "—", "0.00 USD", "—"])
        self.assertNotIn('id="campaign-lift"', html)
        self.assertEqual(svgs(html, "chart-lift"), [])
        self.assertEqual(svgs(html, "chart-bars"), [])

    def test_goal_and_window_can_be_overridden(self) -> None:
        html = self.client.get(dashboard_url(self.campaign), {"window_days": "1"}).content.decode()
        # Within one day only c1 (treated) and h1 (control) bought.
        self.assertEqual(element(html, "summary-conversions"), "1")
        self.assertEqual(element(html, "summary-revenue"), "100.00 USD")
        html = self.client.get(dashboard_url(self.campaign), {"goal": "signup"}).content.decode()
        self.assertEqual(element(html, "summary-conversions"), "0")
        self.assertEqual(element(html, "dashboard-goal"), "signup")

    def test_bad_overrides_get_a_400_naming_the_field(self) -> None:
        response = self.client.get(dashboard_url(self.campaign), {"window_days": "-1", "goal": "Not A Kind"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.context["form"].errors,
            {
                "goal": ["A touchpoint kind: lower-case letters, digits, _ . -; at most 64."],
                "window_days": ["Ensure this value is greater than or equal to 0."],
            },
        )
        self.assertNotIn('id="campaign-summary"', response.content.decode())

    def test_it_answers_from_the_report_run_cache_until_asked_to_recompute(self) -> None:
        url = dashboard_url(self.campaign)
        html = self.client.get(url).content.decode()
        run = ReportRun.objects.get()
        # The campaign's goal and window are part of the run's parameters (one cache entry
        # whether or not a caller spells the defaults out).
        expected = {"campaign": self.campaign.pk, "goal": "purchase", "window_days": 7}
        self.assertEqual((run.kind, run.params, run.status), ("roi", expected, "succeeded"))
        self.assertIn(f'<a href="{reverse("admin:analytics_reportrun_change", args=[run.pk])}">#{run.pk}</a>', html)
        self.assertIn(f'<a href="{url}?refresh=1" id="recompute">Recompute now</a>', html)
        # A purchase after the run: the cached answer stays until a recompute.
        c3 = Customer.objects.get(external_id="c3")
        Touchpoint.objects.create(
            customer=c3,
            kind="purchase",
            occurred_at=T0 + DAY,
            event_id="late",
            revenue=Decimal("25.00"),
            order_id="o-late",
        )
        html = self.client.get(url).content.decode()
        self.assertEqual(element(html, "summary-revenue"), "150.00 USD")
        self.assertEqual(ReportRun.objects.count(), 1)
        html = self.client.get(url, {"refresh": "1"}).content.decode()
        self.assertEqual(element(html, "summary-revenue"), "175.00 USD")
        self.assertEqual(element(html, "summary-conversions"), "3")
        self.assertEqual(ReportRun.objects.filter(status="succeeded").count(), 2)

    @override_settings(REPORT_SYNC_MAX_MESSAGES=0)
    def test_a_large_report_is_queued_and_the_page_waits_for_it(self) -> None:
        url = dashboard_url(self.campaign)
        with self.captureOnCommitCallbacks(execute=False) as queued:
            response = self.client.get(url, {"refresh": "1"})
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        run = ReportRun.objects.get()
        self.assertEqual(run.status, "queued")
        self.assertEqual(len(queued), 1)  # the Celery task, sent after commit
        self.assertIn(f"Computing this report (report run #{run.pk}, queued)", element(html, "report-pending"))
        # It reloads itself without "refresh", so the reload waits for this run.
        self.assertIn(f'<meta http-equiv="refresh" content="5;url={url}">', html)
        self.assertNotIn('id="campaign-summary"', html)
        report_run_execute(run.pk)  # what the worker does
        html = self.client.get(url).content.decode()
        self.assertEqual(element(html, "summary-revenue"), "150.00 USD")
        self.assertNotIn("http-equiv", html)
        self.assertEqual(ReportRun.objects.count(), 1)

    def test_an_unknown_campaign_is_a_404(self) -> None:
        for campaign_id in (999999, 2**70):  # the second is past any database integer
            response = self.client.get(reverse("admin:analytics_campaign_dashboard", args=[campaign_id]))
            self.assertEqual(response.status_code, 404)
            response = self.client.get(reverse("admin:analytics_funnel_report", args=[campaign_id]))
            self.assertEqual(response.status_code, 404)

    def test_a_campaign_with_no_exposure_yet_says_so(self) -> None:
        draft = Campaign.objects.create(name="Draft")
        response = self.client.get(dashboard_url(draft))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertEqual(
            re.findall(r'<p class="warning dashboard-note">([^<]*)</p>', html),
            ["No sends: no customer of this campaign was sent a message."],
        )
        self.assertIn('id="no-holdout"', html)
        self.assertEqual(element(html, "summary-sends"), "0")
        self.assertEqual(element(html, "summary-cost"), "0.00 USD")
        (daily,) = svgs(html, "chart-daily")
        self.assertEqual(marks(daily, "rect", "bar"), [])

    def test_the_campaign_page_links_to_its_dashboard(self) -> None:
        html = self.client.get(reverse("admin:campaigns_campaign_change", args=[self.campaign.pk])).content.decode()
        self.assertIn(f'<a href="{dashboard_url(self.campaign)}" class="campaign-link">Dashboard</a>', html)

    def test_the_campaign_dashboards_list_links_each_campaign(self) -> None:
        other = build_campaign_without_holdout()
        response = self.client.get(reverse("admin:analytics_campaign_dashboards"))
        self.assertEqual(response.status_code, 200)
        links = re.findall(
            r'<a href="(/admin/analytics/reportrun/campaigns/\d+/)">([^<]+)</a>', response.content.decode()
        )
        self.assertEqual(
            links, [(dashboard_url(other), "Imported test"), (dashboard_url(self.campaign), "Winter sale")]
        )
        response = self.client.get(reverse("admin:analytics_campaign_dashboards"), {"q": "winter"})
        self.assertEqual(
            [
                name
                for _, name in re.findall(
                    r'<a href="(/admin/analytics/reportrun/campaigns/\d+/)">([^<]+)</a>', response.content.decode()
                )
            ],
            ["Winter sale"],
        )


class PermissionTests(TestCase):
    def setUp(self) -> None:
        self.campaign = build_campaign()
        self.funnel = build_funnel()
        self.urls = [
            dashboard_url(self.campaign),
            reverse("admin:analytics_campaign_dashboards"),
            report_url(self.funnel),
            reverse("admin:analytics_reportrun_changelist"),
        ]

    def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(self) -> None:
        for url in self.urls:
            response = self.client.get(url)
            self.assertRedirects(response, f"{reverse('admin:login')}?next={url}", fetch_redirect_response=False)
        customer_user = make_marketer("shopper", superuser=False)
        customer_user.is_staff = False
        customer_user.save()
        self.client.force_login(customer_user)
        for url in self.urls:
            response = self.client.get(url)
            self.assertRedirects(response, f"{reverse('admin:login')}?next={url}", fetch_redirect_response=False)

    def test_staff_need_the_view_permissions(self) -> None:
        staff = make_marketer("intern", superuser=False)
        self.client.force_login(staff)
        for url in self.urls:
            self.assertEqual(self.client.get(url).status_code, 403, url)
        grant(staff, "view_campaign", "view_funnel", "view_reportrun")
        for url in self.urls:
            self.assertEqual(self.client.get(url).status_code, 200, url)


class FunnelAdminTests(TestCase):
    def setUp(self) -> None:
        self.marketer = make_marketer()
        self.client.force_login(self.marketer)

    def test_the_report_shows_the_steps_bars_and_times(self) -> None:
        funnel = build_funnel()
        response = self.client.get(report_url(funnel), {"date_from": "2026-11-01", "date_to": "2026-11-30"})
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertEqual(element(html, "funnel-range"), "2026-11-01 to 2026-11-30")
        self.assertEqual(
            element(html, "funnel-totals"),
            "4 entered, 1 converted (25.0%); order ordered, within 7.0 d of the first step.",
        )
        rows = re.findall(r"<tr>(.*?)</tr>", element(html, "funnel-steps"), re.S)
        self.assertEqual(
            [cells(row) for row in rows[1:]],
            [
                ["1", "visit", "4", "100.0%", "100.0%", "0", "—", "—"],
                ["2", "add_to_cart", "2", "50.0%", "50.0%", "2 (50.0%)", "1.5 h", "1.9 h"],
                ["3", "purchase", "1", "50.0%", "25.0%", "1 (50.0%)", "2.0 h", "2.0 h"],
            ],
        )
        (chart,) = svgs(html, "chart-funnel")
        bars = marks(chart, "rect", "bar")
        self.assertEqual([int(bar.get("data-value")) for bar in bars], [count for _, count in FUNNEL_STEPS])
        self.assertEqual([float(bar.get("width")) for bar in bars], [330.0, 165.0, 82.5])
        self.assertEqual(
            [text.text for text in marks(chart, "text", "bar-label")], ["visit", "add_to_cart", "purchase"]
        )
        self.assertEqual(
            [text.text for text in marks(chart, "text", "dropoff")], ["↓ 2 dropped (50.0%)", "↓ 1 dropped (50.0%)"]
        )

    def test_the_saved_funnel_as_it_is_shares_its_report_run_with_the_nightly_refresh(self) -> None:
        funnel = build_funnel()
        response = self.client.get(report_url(funnel))
        self.assertEqual(response.status_code, 200)
        run = ReportRun.objects.get()
        self.assertEqual(
            (run.kind, run.funnel_id, run.params["funnel"], run.status), ("funnel", funnel.pk, funnel.pk, "succeeded")
        )
        self.assertEqual(element(response.content.decode(), "funnel-range"), "the last 30 days")
        self.client.get(report_url(funnel))
        self.assertEqual(ReportRun.objects.count(), 1)  # answered from the cache

    def test_the_report_breaks_down_by_a_customer_attribute(self) -> None:
        funnel = build_funnel()
        response = self.client.get(
            report_url(funnel),
            {"date_from": "2026-11-01", "date_to": "2026-11-30", "breakdown": "attribute", "attribute": "tier"},
        )
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        labels = re.findall(r'<h3 class="breakdown-value">([^<]*)</h3>', html)
        charts = svgs(html, "chart-funnel")[1:]
        counts = {
            label: [int(bar.get("data-value")) for bar in marks(svg, "rect", "bar")]
            for label, svg in zip(labels, charts, strict=True)
        }
        self.assertEqual(counts, {"gold": [2, 2, 1], "silver": [2, 0, 0]})
        # The whole funnel is still there, above the breakdown.
        self.assertEqual(
            [int(bar.get("data-value")) for bar in marks(svgs(html, "chart-funnel")[0], "rect", "bar")], [4, 2, 1]
        )

    def test_a_range_without_events_shows_empty_steps(self) -> None:
        funnel = build_funnel()
        response = self.client.get(report_url(funnel), {"date_from": "2026-10-01", "date_to": "2026-10-31"})
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        (chart,) = svgs(html, "chart-funnel")
        self.assertEqual([int(bar.get("data-value")) for bar in marks(chart, "rect", "bar")], [0, 0, 0])
        self.assertEqual(element(html, "funnel-totals").split(";")[0], "0 entered, 0 converted (—)")

    def test_a_breakdown_by_an_unknown_segment_is_a_400_naming_it(self) -> None:
        funnel = build_funnel()
        funnel.spec = {**funnel.spec, "breakdown": {"by": "segment", "segments": [424242]}}
        funnel.save()
        response = self.client.get(report_url(funnel))
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            element(response.content.decode(), "funnel-error"), "breakdown.segments: no such segment(s): 424242"
        )

    def test_bad_report_parameters_get_a_400_naming_the_field(self) -> None:
        funnel = build_funnel()
        for params, errors in (
            (
                {"date_from": "2026-11-30", "date_to": "2026-11-01", "breakdown": "attribute"},
                {"date_to": ["Must be on or after From."], "attribute": ["Name the attribute to break down by."]},
            ),
            ({"date_to": "2026-11-01"}, {"date_from": ["Give From with To."]}),
            ({"date_from": "2026-11-31"}, {"date_from": ["Enter a valid date."]}),
            ({"breakdown": "segment"}, {"segments": ["Choose the segments to break down by."]}),
            (
                {"breakdown": "planet"},
                {"breakdown": ["Select a valid choice. planet is not one of the available choices."]},
            ),
            (
                {"breakdown": "attribute", "attribute": "no spaces"},
                {"attribute": ["An attribute key: letters, digits, _ . : -; at most 64."]},
            ),
        ):
            with self.subTest(params=params):
                response = self.client.get(report_url(funnel), params)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.context["form"].errors, errors)
                self.assertIsNone(response.context["report"])
                self.assertNotIn('id="funnel-chart"', response.content.decode())

    def test_a_valid_spec_is_saved(self) -> None:
        spec = {"steps": ["visit", {"kind": "signup", "channel": "web"}], "window": {"days": 3}, "last_days": 30}
        response = self.client.post(
            reverse("admin:analytics_funnel_add"), {"name": "Signup", "description": "", "spec": json.dumps(spec)}
        )
        self.assertEqual(response.status_code, 302)
        normalised = {
            "steps": [{"kind": "visit"}, {"kind": "signup", "channel": "web"}],
            "window": {"days": 3},
            "order": "ordered",
            "last_days": 30,
        }
        self.assertEqual(list(Funnel.objects.values_list("name", "spec")), [("Signup", normalised)])

    def test_an_invalid_spec_is_refused_naming_each_field_and_nothing_is_saved(self) -> None:
        response = self.client.post(
            reverse("admin:analytics_funnel_add"),
            {
                "name": "Broken",
                "description": "",
                "spec": '{"steps": [{"kind": "Visit!"}, "buy"], "order": "sideways"}',
            },
        )
        self.assertEqual(response.status_code, 200)
        errors = response.context["adminform"].form.errors["spec"]
        self.assertEqual(
            [error.split(":")[0] for error in errors], ["steps[0].kind", "window", "order", "date_from", "date_to"]
        )
        self.assertIn("order: must be one of ordered, strict, any, not 'sideways'", errors)
        self.assertFalse(Funnel.objects.exists())

    def test_the_list_links_each_funnel_to_its_report(self) -> None:
        funnel = build_funnel()
        html = self.client.get(reverse("admin:analytics_funnel_changelist")).content.decode()
        self.assertIn(f'<a href="{report_url(funnel)}">Report</a>', html)
        self.assertIn("visit → add_to_cart → purchase", html)
        html = self.client.get(reverse("admin:analytics_funnel_change", args=[funnel.pk])).content.decode()
        self.assertIn(f'<li><a href="{report_url(funnel)}">Report</a></li>', html)


class ReportRunAdminTests(TestCase):
    def setUp(self) -> None:
        self.client.force_login(make_marketer())
        self.run = ReportRun.objects.create(
            kind=ReportRun.Kind.ROI,
            params={"campaign": 7, "goal": "purchase"},
            params_key="k" * 64,
            status=ReportRun.Status.SUCCEEDED,
            result={"revenue": "150.0000", "note": "<b>bold</b>"},
            duration_ms=1234,
        )

    def test_the_list_shows_kind_status_parameters_and_duration(self) -> None:
        response = self.client.get(reverse("admin:analytics_reportrun_changelist"))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        dashboard = reverse("admin:analytics_campaign_dashboard", args=[7])
        self.assertIn(f'<a href="{dashboard}">campaign=7, goal=purchase</a>', html)
        self.assertIn("1.234 s", html)
        self.assertIn(f'href="{reverse("admin:analytics_campaign_dashboards")}"', html)

    def test_a_run_is_read_only_with_an_escaped_result_preview(self) -> None:
        response = self.client.get(reverse("admin:analytics_reportrun_change", args=[self.run.pk]))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertIn("&quot;revenue&quot;: &quot;150.0000&quot;", html)
        self.assertIn("&lt;b&gt;bold&lt;/b&gt;", html)
        self.assertNotIn('name="_save"', html)
        self.assertEqual(self.client.get(reverse("admin:analytics_reportrun_add")).status_code, 403)
        response = self.client.post(reverse("admin:analytics_reportrun_delete", args=[self.run.pk]), {"post": "yes"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(ReportRun.objects.count(), 1)
