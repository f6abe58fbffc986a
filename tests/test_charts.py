"""The dashboards' SVG charts (analytics.charts): well-formed SVG with a title and
description, one mark per value, sizes proportional to the values, labels escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from unittest import TestCase

from analytics.charts import FunnelStep, Interval, bar_chart, daily_chart, funnel_chart, lift_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


def marks(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [element for element in root.iter(f"{SVG}{tag}") if element.get("class") == cls]


class FunnelChartTests(TestCase):
    def test_it_draws_one_bar_per_step_with_lengths_proportional_to_customers(self) -> None:
        root = parse(funnel_chart([FunnelStep("visit", 200), FunnelStep("add_to_cart", 50), FunnelStep("buy", 10)]))
        bars = marks(root, "rect", "bar")
        self.assertEqual([bar.get("data-value") for bar in bars], ["200", "50", "10"])
        widths = [float(bar.get("width")) for bar in bars]
        self.assertEqual(widths, [330.0, 82.5, 16.5])  # 640 - 160 labels - 150 value text = 330 for 200
        self.assertEqual(
            [text.text for text in marks(root, "text", "bar-value")], ["200 (100.0%)", "50 (25.0%)", "10 (5.0%)"]
        )
        self.assertEqual(
            [text.text for text in marks(root, "text", "dropoff")], ["↓ 150 dropped (75.0%)", "↓ 40 dropped (80.0%)"]
        )
        self.assertEqual(bars[1].find(f"{SVG}title").text, "add_to_cart: 50 customers (25.0%)")

    def test_it_has_an_accessible_title_and_description(self) -> None:
        root = parse(funnel_chart([FunnelStep("visit", 4), FunnelStep("buy", 1)], title="Checkout funnel"))
        self.assertEqual(root.get("role"), "img")
        title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
        self.assertEqual(title.text, "Checkout funnel")
        self.assertEqual(desc.text, "step 1, visit: 4 customers (100.0%); step 2, buy: 1 customers (25.0%)")
        self.assertEqual(root.get("aria-labelledby"), f"{title.get('id')} {desc.get('id')}")

    def test_it_escapes_labels(self) -> None:
        svg = funnel_chart([FunnelStep('<script>alert("x")</script> & co', 3)])
        self.assertNotIn("<script>", svg)
        root = parse(svg)
        self.assertEqual(marks(root, "text", "bar-label")[0].text, '<script>alert("x")</script> & co')

    def test_an_empty_first_step_gives_zero_bars_and_no_percentages(self) -> None:
        root = parse(funnel_chart([FunnelStep("visit", 0), FunnelStep("buy", 0)]))
        self.assertEqual([bar.get("width") for bar in marks(root, "rect", "bar")], ["0", "0"])
        self.assertEqual([text.text for text in marks(root, "text", "bar-value")], ["0", "0"])

    def test_no_steps_says_so(self) -> None:
        root = parse(funnel_chart([]))
        self.assertEqual(marks(root, "rect", "bar"), [])
        self.assertIn("No steps.", "".join(root.itertext()))


class BarChartTests(TestCase):
    def test_it_draws_proportional_bars_in_alternating_colours(self) -> None:
        root = parse(bar_chart([("treated", 0.5), ("control", 0.25)], fmt=lambda value: f"{value:.0%}"))
        bars = marks(root, "rect", "bar")
        self.assertEqual([float(bar.get("width")) for bar in bars], [370.0, 185.0])  # 640 - 160 - 110 = 370
        self.assertEqual([bar.get("fill") for bar in bars], ["#417690", "#999999"])
        self.assertEqual([text.text for text in marks(root, "text", "bar-value")], ["50%", "25%"])
        self.assertEqual(root.find(f"{SVG}desc").text, "treated: 50%; control: 25%")

    def test_all_zero_values_give_empty_bars(self) -> None:
        root = parse(bar_chart([("treated", 0), ("control", 0)]))
        self.assertEqual([bar.get("width") for bar in marks(root, "rect", "bar")], ["0", "0"])


class LiftChartTests(TestCase):
    def test_it_draws_a_point_and_an_error_bar_per_row_on_a_common_scale(self) -> None:
        root = parse(
            lift_chart(
                [Interval("conversion rate", 0.05, 0.01, 0.09), Interval("revenue per customer", -1.0, -3.0, 1.0)],
                fmt=lambda value: f"{value:+.2f}",
            )
        )
        points = marks(root, "circle", "point")
        self.assertEqual([point.get("data-value") for point in points], ["0.05", "-1.0"])
        bars = marks(root, "g", "error-bar")
        self.assertEqual(
            [(bar.get("data-low"), bar.get("data-high")) for bar in bars], [("0.01", "0.09"), ("-3.0", "1.0")]
        )

        # Scale: -3 .. 1 padded by 5% of the span (0.2) each side, over x 180..624.
        def x(value: float) -> float:
            return round(180 + (value + 3.2) / 4.4 * 444, 2)

        self.assertEqual([float(point.get("cx")) for point in points], [x(0.05), x(-1.0)])
        ends = [[float(line.get("x1")) for line in bar.iter(f"{SVG}line")][1:] for bar in bars]
        self.assertEqual(ends, [[x(0.01), x(0.09)], [x(-3.0), x(1.0)]])
        zero = [line for line in root.iter(f"{SVG}line") if line.get("class") == "zero"]
        self.assertEqual(float(zero[0].get("x1")), x(0.0))
        self.assertEqual(
            [text.text for text in marks(root, "text", "interval-end")], ["+0.01", "+0.09", "-3.00", "+1.00"]
        )
        # An interval above zero is a real effect (green); one spanning zero is grey.
        self.assertEqual([bar.get("stroke") for bar in bars], ["#2e7d32", "#999999"])
        self.assertEqual(points[0].find(f"{SVG}title").text, "conversion rate: +0.05 (95% interval +0.01 to +0.09)")

    def test_rows_without_an_interval_are_left_out(self) -> None:
        root = parse(lift_chart([Interval("revenue", 1.0, None, None)]))
        self.assertEqual(marks(root, "circle", "point"), [])
        self.assertIn("No interval to show.", "".join(root.itertext()))


class DailyChartTests(TestCase):
    def test_it_draws_one_bar_per_day_with_heights_proportional_to_the_value(self) -> None:
        root = parse(daily_chart([("2026-11-01", 100.0), ("2026-11-02", 25.0), ("2026-11-03", 0.0)]))
        bars = marks(root, "rect", "bar")
        self.assertEqual(len(bars), 3)
        self.assertEqual([float(bar.get("height")) for bar in bars], [168.0, 42.0, 0.0])  # 200 - 8 - 24 = 168
        self.assertEqual([float(bar.get("y")) for bar in bars], [8.0, 134.0, 176.0])  # all stand on the baseline
        self.assertEqual(bars[0].find(f"{SVG}title").text, "2026-11-01: 100")

    def test_a_negative_day_hangs_below_the_baseline_in_red(self) -> None:
        root = parse(daily_chart([("d1", 30.0), ("d2", -10.0)]))
        bars = marks(root, "rect", "bar")
        baseline = float(next(line for line in root.iter(f"{SVG}line") if line.get("class") == "baseline").get("y1"))
        self.assertEqual(baseline, 134.0)  # 8 + 168 * 30 / 40
        self.assertEqual(
            [(float(bar.get("y")), float(bar.get("height"))) for bar in bars], [(8.0, 126.0), (134.0, 42.0)]
        )
        self.assertEqual([bar.get("fill") for bar in bars], ["#417690", "#ba2121"])

    def test_no_days_says_so(self) -> None:
        root = parse(daily_chart([]))
        self.assertEqual(marks(root, "rect", "bar"), [])
        self.assertIn("No days in the range.", "".join(root.itertext()))
