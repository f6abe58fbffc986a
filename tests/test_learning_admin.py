"""The admin of the learning models: a propensity version's page shows its metrics beside
the baselines and the champion, the calibration table and the training curve (inline SVG);
an uplift version's page its Qini and deciles; "Train now" trains (in the request) or queues
on the gpu queue; promote and rollback buttons change the champion and rescore."""

from __future__ import annotations

import re
from decimal import Decimal

from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import TestCase
from django.urls import reverse

from marketing.models import Customer, Product
from marketing.services import customer_erase, customer_export
from mlcore.models import CustomerScore, ModelVersion
from mlcore.propensity import propensity_train
from mlcore.uplift import uplift_train
from tests.learning_helpers import FAST, NOW, OneThread, plant

LIST = reverse("admin:mlcore_modelversion_changelist")
TRAIN = reverse("admin:mlcore_modelversion_train")
UNTRAINED = {**FAST, "lr": 1e-7, "max_epochs": 1}


def page(version: ModelVersion) -> str:
    return reverse("admin:mlcore_modelversion_change", args=[version.pk])


class LearningAdminTests(OneThread, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.ids = plant(300)

    def setUp(self) -> None:
        self.marketer = User.objects.create_superuser("marketer", "marketer@example.com", "pw")
        self.client.force_login(self.marketer)

    def messages_of(self, response) -> list[str]:
        return [str(m) for m in get_messages(response.wsgi_request)]

    def test_a_propensity_version_page_shows_its_numbers_and_curve(self) -> None:
        weak = propensity_train(now=NOW, **UNTRAINED)
        version = propensity_train(now=NOW, **{**FAST, "baselines": True})
        version.refresh_from_db()
        response = self.client.get(page(version))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        m, comparison = version.metrics, version.metrics["champion_comparison"]
        self.assertEqual(
            response.context["learning"]["columns"],
            ["This model", "Logistic regression", "HistGradientBoosting", f"Champion v{weak.pk} (same rows)"],
        )
        auc_row = response.context["learning"]["rows"][0]
        self.assertEqual(
            auc_row,
            {
                "label": "AUC",
                "values": [
                    f"{m['auc']:.4f}",
                    f"{m['baselines']['logistic_regression']['auc']:.4f}",
                    f"{m['baselines']['hist_gradient_boosting']['auc']:.4f}",
                    f"{comparison['champion_auc']:.4f}",
                ],
            },
        )
        for value in auc_row["values"]:
            self.assertIn(f"<td>{value}</td>", html)
        self.assertIn(f"<td>{m['log_loss']:.4f}</td>", html)
        self.assertIn("Champion decision: higher validation AUC than the champion.", html)
        # The calibration table: one row per non-empty bin.
        self.assertEqual(html.count("<tr><td>"), len(m["calibration"]))
        # The curve: an inline SVG with one point per epoch for each loss.
        svg = re.search(r'<svg[^>]*class="training-curve".*?</svg>', html, re.S).group(0)
        for name in ("train_loss", "valid_loss"):
            points = re.search(rf'<polyline points="([^"]*)"[^>]*class="curve-{name}"', svg).group(1)
            self.assertEqual(len(points.split()), m["epochs"])
        # The champion offers rollback, not promotion.
        self.assertIn(reverse("admin:mlcore_modelversion_rollback", args=[version.pk]), html)
        self.assertNotIn(reverse("admin:mlcore_modelversion_promote", args=[version.pk]), html)
        weak_html = self.client.get(page(weak)).content.decode()
        self.assertIn(reverse("admin:mlcore_modelversion_promote", args=[weak.pk]), weak_html)

    def test_an_uplift_version_page_shows_qini_and_deciles(self) -> None:
        plant(400, prefix="u", held_out_share=0.5, uplift=True, seed=5)
        version = uplift_train(now=NOW)
        html = self.client.get(page(version)).content.decode()
        self.assertIn(f"<td>{version.metrics['qini']:.4f}</td>", html)
        self.assertIn("<th>Response model</th>", html)
        self.assertIn("Observed uplift by decile", html)
        self.assertIn("No training curve (this model trains in one pass).", html)

    def test_the_list_offers_train_now(self) -> None:
        html = self.client.get(LIST).content.decode()
        self.assertIn(f'href="{TRAIN}?task=propensity"', html)
        self.assertIn(f'href="{TRAIN}?task=uplift"', html)
        self.assertEqual(self.client.get(f"{TRAIN}?task=uplift").context["form"].initial["task"], "uplift")

    def test_train_now_in_the_request_and_queued(self) -> None:
        response = self.client.post(TRAIN, {"task": "uplift", "days": 3650, "method": "t_learner", "wait": "on"})
        self.assertRedirects(response, LIST)
        self.assertEqual(
            self.messages_of(response),
            [
                "The uplift training failed: 300 sends and no held-out customers in the last 3650 days: uplift is "
                "learnt from campaigns with a holdout. It is recorded as a failed model version; the champion is "
                "unchanged."
            ],
        )
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(TRAIN, {"task": "propensity", "days": 30, "method": "t_learner"})
        self.assertRedirects(response, LIST)
        self.assertEqual(len(callbacks), 1)
        (message,) = self.messages_of(response)
        self.assertRegex(message, r"^Queued propensity training on the gpu queue \(task [0-9a-f-]{36}\)")
        self.assertEqual(ModelVersion.objects.count(), 1)  # the failed uplift run only: nothing trained yet
        response = self.client.post(TRAIN, {"task": "churn", "days": 0})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(set(response.context["form"].errors), {"task", "days"})

    def test_promote_and_rollback_buttons(self) -> None:
        weak = propensity_train(now=NOW, **UNTRAINED)
        strong = propensity_train(now=NOW, **FAST)
        response = self.client.post(reverse("admin:mlcore_modelversion_rollback", args=[strong.pk]))
        self.assertRedirects(response, page(weak))
        self.assertEqual(
            self.messages_of(response),
            [f"Version {weak.pk} is the champion again (rolled back); every customer was rescored."],
        )
        self.assertEqual(ModelVersion.objects.get(is_champion=True), weak)
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {weak.pk})
        response = self.client.post(reverse("admin:mlcore_modelversion_promote", args=[strong.pk]), follow=True)
        self.assertRedirects(response, page(strong))
        self.assertEqual(ModelVersion.objects.get(is_champion=True), strong)
        # Refused with the reason; nothing changes.
        response = self.client.post(reverse("admin:mlcore_modelversion_rollback", args=[weak.pk]), follow=True)
        self.assertEqual(
            [str(m) for m in response.context["messages"]],
            [f"Model version {weak.pk} is not the champion: only the champion is rolled back."],
        )
        response = self.client.post(reverse("admin:mlcore_modelversion_promote", args=[strong.pk]), follow=True)
        self.assertEqual(
            [str(m) for m in response.context["messages"]], [f"Model version {strong.pk} is already the champion."]
        )
        self.assertEqual(ModelVersion.objects.get(is_champion=True), strong)
        # A GET changes nothing.
        self.client.get(reverse("admin:mlcore_modelversion_promote", args=[weak.pk]))
        self.assertEqual(ModelVersion.objects.get(is_champion=True), strong)

    def test_staff_without_the_permission_cannot_train_or_promote(self) -> None:
        viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
        self.client.force_login(viewer)
        version = propensity_train(now=NOW, **FAST)
        self.assertEqual(self.client.get(TRAIN).status_code, 403)
        self.assertEqual(
            self.client.post(reverse("admin:mlcore_modelversion_rollback", args=[version.pk])).status_code, 403
        )
        self.assertTrue(ModelVersion.objects.get(pk=version.pk).is_champion)


class CustomerPanelTests(TestCase):
    """The customer's admin page shows mlcore's scores and recommendations (a registered
    panel); GDPR erase removes the scores and export lists them."""

    def setUp(self) -> None:
        self.client.force_login(User.objects.create_superuser("marketer", "marketer@example.com", "pw"))
        self.ann = Customer.objects.create(external_id="ann", email="ann@example.com")
        self.propensity = ModelVersion.objects.create(
            task="propensity", algorithm="mlp", status="succeeded", is_champion=True
        )
        self.uplift = ModelVersion.objects.create(task="uplift", algorithm="t_learner", status="succeeded")
        CustomerScore.objects.create(model_version=self.propensity, customer=self.ann, score=0.125)
        CustomerScore.objects.create(model_version=self.uplift, customer=self.ann, score=0.03)  # not the champion

    def test_the_customer_page_shows_champion_scores_and_recommendations(self) -> None:
        Product.objects.create(sku="P1", name="Tent", price=Decimal("120"))
        html = self.client.get(reverse("admin:marketing_customer_change", args=[self.ann.pk])).content.decode()
        self.assertIn("<h4>Model scores and recommendations</h4>", html)
        self.assertIn(f"<li>propensity: 12.5% chance to convert (model version {self.propensity.pk})</li>", html)
        self.assertIn("<li>uplift: no champion model, or not scored yet</li>", html)
        self.assertIn("<b>Recommended next</b></p><p>nothing to recommend</p>", html)

    def test_erase_removes_the_scores_and_export_lists_them(self) -> None:
        self.assertEqual(
            customer_export(self.ann)["model_scores"],
            [
                {"task": "propensity", "score": 0.125, "model_version": self.propensity.pk},
                {"task": "uplift", "score": 0.03, "model_version": self.uplift.pk},
            ],
        )
        other = Customer.objects.create(external_id="bob")
        CustomerScore.objects.create(model_version=self.propensity, customer=other, score=0.5)

        customer_erase(self.ann)

        self.assertEqual(list(CustomerScore.objects.values_list("customer__external_id", "score")), [("bob", 0.5)])
