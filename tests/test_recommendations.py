"""Product recommendations (mlcore.recommendations): item-based CF fitted on hand-built
purchases and stored as the champion, exact lists per customer (CF cosine scores, topped up
by association-rule next-best-offer, then best sellers; never a bought or inactive product),
a fixed number of queries per batch, `{{ recommendations }}` in creatives (send batch and
preview), and the API (exact body, 404 for an unknown customer, 400 for a bad k). Runs on
PostgreSQL and SQLite."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.delivery.definitions import creative_preview
from campaigns.delivery.render import (
    SAMPLE_RECOMMENDATIONS,
    batch_recommendations,
    customer_context,
    render_creative,
)
from campaigns.delivery.send import send_due
from campaigns.models import Campaign, Creative
from marketing.models import Customer, Product, Touchpoint
from mlcore import recommendations
from mlcore.models import AssociationRule, ModelArtifact, ModelVersion, items_text
from mlcore.recommendations import recommendations_fit, recommendations_for
from tests.api_helpers import ApiTestCase
from tests.test_send import T0 as SEND_T0
from tests.test_send import SinkMixin, email_channel, make_campaign, queue

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
# Who bought what (one order per line). Cosine on the customer x product columns:
# P1 {ann, bob}, P2 {ann, bob, cat}, P3 {bob, cat}, P4 {dan, gus}, P6 {dan} (inactive).
PURCHASES = {
    "ann": ["P1", "P2"],
    "bob": ["P1", "P2", "P3"],
    "cat": ["P2", "P3"],
    "dan": ["P4", "P6"],
    "gus": ["P4"],
}
SIM_1_3 = 1 / (math.sqrt(2) * math.sqrt(2))
SIM_2_3 = 2 / (math.sqrt(3) * math.sqrt(2))
SIM_1_2 = 2 / (math.sqrt(2) * math.sqrt(3))
SIM_4_6 = 1 / (math.sqrt(2) * 1)


def item(sku: str, score: float, source: str) -> dict:
    names = {"P1": ("Tent", "120.00"), "P2": ("Stove", "45.50"), "P3": ("Lamp", "19.99")}
    names |= {"P4": ("Kayak", "800.00"), "P5": ("Paddle", "60.00")}
    name, price = names[sku]
    return {
        "sku": sku,
        "name": name,
        "price": price,
        "url": f"https://shop.example.com/{sku}",
        "score": round(score, 6),
        "source": source,
    }


class RecommendationCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        recommendations.clear_caches()
        for sku, name, price in [
            ("P1", "Tent", "120.00"),
            ("P2", "Stove", "45.5"),
            ("P3", "Lamp", "19.99"),
            ("P4", "Kayak", "800"),
            ("P5", "Paddle", "60"),
        ]:
            Product.objects.create(
                sku=sku, name=name, price=Decimal(price), attributes={"url": f"https://shop.example.com/{sku}"}
            )
        Product.objects.create(sku="P6", name="Old kayak", price=Decimal("500"), active=False)
        self.customers = {}
        for name in [*PURCHASES, "eve"]:
            self.customers[name] = Customer.objects.create(external_id=name, email=f"{name}@example.com")
        n = 0
        for name, skus in PURCHASES.items():
            for sku in skus:
                n += 1
                Touchpoint.objects.create(
                    customer=self.customers[name],
                    kind="purchase",
                    event_id=f"e{n}",
                    order_id=f"o{n}",
                    sku=sku,
                    revenue=Decimal("10"),
                    occurred_at=T0,
                )

    def ids(self, *names: str) -> list[int]:
        return [self.customers[name].pk for name in names]

    def rules(self, *rules: tuple[list[str], list[str], float, float]) -> ModelVersion:
        version = ModelVersion.objects.create(task="rules", algorithm="eclat", status="succeeded", is_champion=True)
        for rank, (antecedents, consequents, confidence, lift) in enumerate(rules, start=1):
            AssociationRule.objects.create(
                model_version=version,
                rank=rank,
                antecedents=antecedents,
                consequents=consequents,
                antecedent_items=items_text(antecedents),
                consequent_items=items_text(consequents),
                antecedent_support=0.2,
                consequent_support=0.2,
                support=0.1,
                confidence=confidence,
                lift=lift,
                leverage=0.05,
            )
        return version


class FitTests(RecommendationCase):
    def test_a_fit_is_stored_as_the_champion_with_its_artifact(self) -> None:
        first = recommendations_fit()
        second = recommendations_fit(neighbours=10)
        first.refresh_from_db()
        second.refresh_from_db()
        self.assertEqual(
            (second.task, second.status, second.is_champion, second.algorithm, second.params),
            ("recommendations", "succeeded", True, "item_cf_cosine", {"neighbours": 10}),
        )
        self.assertFalse(first.is_champion)
        self.assertEqual(second.metrics, {"customers": 5, "items": 5, "interactions": 10})
        self.assertTrue(second.artifact.startswith("db:sha256:"))
        self.assertEqual(ModelArtifact.objects.filter(version__in=[first, second]).count(), 2)

    def test_no_purchases_is_a_failed_version_and_a_clear_error(self) -> None:
        Touchpoint.objects.all().delete()
        with self.assertRaisesMessage(ValueError, "no purchase touchpoints with a sku"):
            recommendations_fit()
        version = ModelVersion.objects.get(task="recommendations")
        self.assertEqual((version.status, version.is_champion), ("failed", False))
        self.assertIn("no purchase touchpoints", version.error)


class TaskTests(RecommendationCase):
    def test_the_task_fits_a_champion_and_skips_while_a_run_is_running(self) -> None:
        from mlcore.tasks import recommendations_fit as task

        result = task.apply().get()
        version = ModelVersion.objects.get(task="recommendations")
        self.assertEqual(result, {"model_version_id": version.pk, "customers": 5, "items": 5, "interactions": 10})
        running = ModelVersion.objects.create(task="recommendations", algorithm="item_cf_cosine")
        self.assertEqual(task.apply().get(), {"skipped": f"recommendations version {running.pk} is still running"})
        self.assertEqual(ModelVersion.objects.filter(task="recommendations").count(), 2)


class RecommendTests(RecommendationCase):
    def test_cf_then_rules_then_best_sellers_exactly(self) -> None:
        recommendations_fit()
        self.rules((["P4"], ["P5"], 0.6, 2.0), (["P1", "P2"], ["P3"], 0.9, 3.0))
        got = recommendations_for(self.ids("ann", "bob", "cat", "dan", "gus", "eve"), k=4)
        # Best sellers (distinct buyers, active only): P2 3, P1 2, P3 2, P4 2 (sku breaks ties).
        self.assertEqual(
            got,
            {
                # ann bought P1 and P2: CF scores P3 by sim(P1,P3) + sim(P2,P3); the rule P1,P2 -> P3
                # offers the same product (already taken); P4 tops up from the best sellers.
                self.customers["ann"].pk: [item("P3", SIM_1_3 + SIM_2_3, "cf"), item("P4", 2, "popular")],
                self.customers["bob"].pk: [item("P4", 2, "popular")],
                self.customers["cat"].pk: [item("P1", SIM_1_2 + SIM_1_3, "cf"), item("P4", 2, "popular")],
                # dan bought P4 and the inactive P6: no CF candidate left; the rule P4 -> P5.
                self.customers["dan"].pk: [
                    item("P5", 0.6, "rules"),
                    item("P2", 3, "popular"),
                    item("P1", 2, "popular"),
                    item("P3", 2, "popular"),
                ],
                # gus: CF offers the inactive P6 (score sim(P4,P6)): left out.
                self.customers["gus"].pk: [
                    item("P5", 0.6, "rules"),
                    item("P2", 3, "popular"),
                    item("P1", 2, "popular"),
                    item("P3", 2, "popular"),
                ],
                self.customers["eve"].pk: [
                    item("P2", 3, "popular"),
                    item("P1", 2, "popular"),
                    item("P3", 2, "popular"),
                    item("P4", 2, "popular"),
                ],
            },
        )

    def test_without_a_model_or_rules_everyone_gets_the_best_sellers_they_did_not_buy(self) -> None:
        got = recommendations_for(self.ids("ann", "eve"), k=2)
        self.assertEqual(got[self.customers["ann"].pk], [item("P3", 2, "popular"), item("P4", 2, "popular")])
        self.assertEqual(got[self.customers["eve"].pk], [item("P2", 3, "popular"), item("P1", 2, "popular")])
        self.assertEqual(recommendations_for([], k=3), {})

    def test_the_query_count_does_not_grow_with_the_batch(self) -> None:
        recommendations_fit()
        self.rules((["P4"], ["P5"], 0.6, 2.0))
        recommendations_for(self.ids("ann"), k=3)  # warms the model and rules caches
        with CaptureQueriesContext(connection) as small:
            recommendations_for(self.ids("ann"), k=3)
        with CaptureQueriesContext(connection) as large:
            recommendations_for(self.ids("ann", "bob", "cat", "dan", "gus", "eve"), k=3)
        self.assertEqual(len(small), len(large))
        self.assertLessEqual(len(large), 6)

    def test_bad_k_is_refused(self) -> None:
        for k in (0, 51, "3", True):
            with self.assertRaisesMessage(ValueError, "k must be a whole number from 1 to 50"):
                recommendations_for(self.ids("ann"), k=k)


class TemplateTests(RecommendationCase):
    TEMPLATE = "{% for r in recommendations %}{{ r.name }} {{ r.price }} ({{ r.sku }});{% endfor %}"

    def test_a_send_batch_renders_each_customers_recommendations(self) -> None:
        recommendations_fit()
        campaign = Campaign.objects.create(name="Gear")
        creative = Creative.objects.create(campaign=campaign, channel_kind="email", name="A", body=self.TEMPLATE)
        batch = batch_recommendations([creative], self.ids("ann", "cat"), k=2)
        texts = {
            name: render_creative(
                creative,
                customer_context(
                    {"external_id": name, "email": f"{name}@example.com"},
                    campaign=campaign,
                    message_id=7,
                    recommendations=batch[self.customers[name].pk],
                ),
            ).text
            for name in ("ann", "cat")
        }
        self.assertEqual(
            texts, {"ann": "Lamp 19.99 (P3);Kayak 800.00 (P4);", "cat": "Tent 120.00 (P1);Kayak 800.00 (P4);"}
        )

    def test_creatives_without_recommendations_cost_no_query(self) -> None:
        plain = SimpleNamespace(subject="Hi {{ first_name }}", body="Hello", html_body="")
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(batch_recommendations([plain], self.ids("ann", "cat")), {})
        self.assertEqual(len(queries), 0)

    def test_a_failing_lookup_leaves_the_batch_without_recommendations(self) -> None:
        recommendations_fit()
        ModelArtifact.objects.update(data=b"broken")
        creative = SimpleNamespace(subject="", body="{{ recommendations }}", html_body="")
        with self.assertLogs("campaigns.delivery.render", "ERROR"):
            self.assertEqual(batch_recommendations([creative], self.ids("ann")), {})

    def test_a_message_without_a_batch_list_renders_none(self) -> None:
        context = customer_context({"external_id": "ann"}, campaign={"id": 1, "name": "x"}, message_id=3)
        self.assertEqual(context["recommendations"], [])

    def test_the_preview_of_the_sample_customer_shows_sample_recommendations(self) -> None:
        campaign = Campaign.objects.create(name="Gear")
        creative = Creative.objects.create(campaign=campaign, channel_kind="email", name="A", body=self.TEMPLATE)
        preview = creative_preview(creative)
        self.assertEqual(
            preview["text"],
            "".join(f"{r['name']} {r['price']} ({r['sku']});" for r in SAMPLE_RECOMMENDATIONS),
        )


class ApiTests(RecommendationCase):
    def test_a_customers_recommendations(self) -> None:
        recommendations_fit()
        response = self.api.get("/api/v1/customers/ann/recommendations?k=1")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(
            response.json(),
            {
                "external_id": "ann",
                "customer_id": self.customers["ann"].pk,
                "k": 1,
                "recommendations": [item("P3", SIM_1_3 + SIM_2_3, "cf")],
            },
        )
        self.assertEqual(self.api.get("/api/v1/customers/ann/recommendations/").json()["k"], 5)

    def test_an_unknown_customer_is_404(self) -> None:
        response = self.api.get("/api/v1/customers/nobody/recommendations")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), {"detail": "No customer with external id 'nobody'."})

    def test_a_bad_k_is_400_naming_it(self) -> None:
        for k in ("0", "51", "x"):
            response = self.api.get(f"/api/v1/customers/ann/recommendations?k={k}")
            self.assertEqual(response.status_code, 400)
            self.assertEqual(
                response.json()["errors"],
                [{"row": None, "field": "k", "message": "must be a whole number from 1 to 50"}],
            )

    def test_it_needs_a_key(self) -> None:
        from rest_framework.test import APIClient

        self.assertIn(APIClient().get("/api/v1/customers/ann/recommendations").status_code, (401, 403))


class SendTests(SinkMixin, RecommendationCase):
    """Through the real sender to the SMTP sink: each email carries its customer's list."""

    def test_each_sent_email_renders_its_customers_recommendations(self) -> None:
        recommendations_fit()
        campaign, run = make_campaign(name="Gear")
        channel = email_channel(self.sink)
        creative = Creative.objects.create(
            campaign=campaign,
            channel_kind="email",
            name="A",
            subject="For you",
            body='{% for r in recommendations|slice:":2" %}{{ r.name }} ({{ r.sku }});{% endfor %}',
        )
        Customer.objects.filter(external_id__in=["ann", "cat"]).update(email_opt_in=True)
        queue(campaign, run, channel, creative, [self.customers["ann"], self.customers["cat"]])

        self.assertEqual(send_due(now=SEND_T0), {"claimed": 2, "sent": 2})

        bodies = {address: item.message.get_content().strip() for address, item in self.sink.by_recipient().items()}
        self.assertEqual(
            bodies, {"ann@example.com": "Lamp (P3);Kayak (P4);", "cat@example.com": "Tent (P1);Kayak (P4);"}
        )
