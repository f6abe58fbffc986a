"""The admin of model outputs: clusterings (list with the champion's results, validated
form, "Run now" as an action and a button, cluster profiles, deletes refused while segments
need them), a cluster segment's profile, the model registry (read-only) and the rules
browser with "Mine rules now"."""

from __future__ import annotations

import re
from decimal import Decimal
from unittest import mock

from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from campaigns.admin import SegmentForm
from campaigns.models import Segment
from campaigns.segments.clusterings import clustering_refresh
from campaigns.tasks import clustering_refresh_task
from mlcore.models import AssociationRule, Clustering, ModelVersion
from mlcore.tasks import association_rules_mine
from tests.api_helpers import make_customer, make_touchpoint
from tests.test_ml_api import make_clustering, make_rule, plant_customers, rules_version

CLUSTERINGS = reverse("admin:mlcore_clustering_changelist")
RULES = reverse("admin:mlcore_associationrule_changelist")
MINE = reverse("admin:mlcore_associationrule_mine")
TASK_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class MlAdminTestCase(TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.marketer = User.objects.create_superuser("marketer", "marketer@example.com", "pw")
        self.client.force_login(self.marketer)

    def messages_of(self, response) -> list[str]:
        return [str(m) for m in get_messages(response.wsgi_request)]


class ClusteringAdminTests(MlAdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        plant_customers()
        self.clustering = make_clustering()
        self.change = reverse("admin:mlcore_clustering_change", args=[self.clustering.pk])

    def run_now(self) -> dict:
        return clustering_refresh(self.clustering.pk)

    def test_the_list_shows_the_champions_results(self) -> None:
        never = make_clustering(name="untried", k=None, method="auto")
        result = self.run_now()
        response = self.client.get(CLUSTERINGS)
        self.assertEqual(response.status_code, 200)
        rows = {c.name: c for c in response.context["cl"].result_list}
        admin = response.context["cl"].model_admin
        version = ModelVersion.objects.get(pk=result["model_version_id"])
        self.assertEqual(
            [admin.k_given(rows["value"]), admin.k_found(rows["value"]), admin.silhouette(rows["value"])],
            ["2", "2", f"{result['silhouette']:.3f}"],
        )
        self.assertEqual(admin.last_run(rows["value"]), f"{version.started_at:%Y-%m-%d %H:%M} (succeeded)")
        self.assertEqual(
            [admin.k_given(rows["untried"]), admin.k_found(rows["untried"]), admin.silhouette(rows["untried"])],
            ["auto", "—", "—"],
        )
        self.assertEqual(admin.last_run(rows[never.name]), "never")
        self.assertContains(response, f"{result['silhouette']:.3f}")

    def test_the_form_checks_features_and_k_and_saves_nothing_bad(self) -> None:
        response = self.client.post(
            reverse("admin:mlcore_clustering_add"),
            {"name": "bad", "features": '["monetary", "nope"]', "k": "60", "method": "auto", "enabled": "on"},
        )
        self.assertEqual(response.status_code, 200)
        form = response.context["adminform"].form
        self.assertEqual(
            form.errors,
            {
                "features": [
                    "item 1: unknown feature 'nope'; use one of recency_days, frequency, monetary, tenure_days, "
                    "days_since_seen, email_open_rate, email_click_rate, sms_open_rate, sms_click_rate, "
                    "push_open_rate, push_click_rate or attributes.<key>"
                ],
                "k": ["Ensure this value is between 2 and 50."],
            },
        )
        response = self.client.post(
            reverse("admin:mlcore_clustering_add"), {"name": "dense", "features": "", "k": "3", "method": "dbscan"}
        )
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"k": ["DBSCAN finds the number of clusters itself: leave k empty."]},
        )
        self.assertEqual(list(Clustering.objects.values_list("name", flat=True)), ["value"])

        response = self.client.post(
            reverse("admin:mlcore_clustering_add"), {"name": "defaults", "features": "", "method": "auto"}
        )
        self.assertEqual(response.status_code, 302)
        self.assertEqual(Clustering.objects.get(name="defaults").features, [])

    def test_run_now_queues_each_selected_clustering_after_commit(self) -> None:
        other = make_clustering(name="other")
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(
                CLUSTERINGS, {"action": "run_now", "_selected_action": [self.clustering.pk, other.pk]}, follow=True
            )
        (message,) = self.messages_of(response)
        task_ids = re.findall(TASK_ID, message)
        self.assertEqual(
            message, f"Queued a run of 2 clustering(s): value (task {task_ids[0]}); other (task {task_ids[1]})."
        )
        self.assertFalse(ModelVersion.objects.exists())
        with mock.patch.object(clustering_refresh_task, "apply_async") as apply_async:
            for callback in callbacks:
                callback()
        self.assertEqual(
            [call.kwargs for call in apply_async.call_args_list],
            [
                {"args": [self.clustering.pk], "task_id": task_ids[0]},
                {"args": [other.pk], "task_id": task_ids[1]},
            ],
        )
        actions = dict(response.context["action_form"].fields["action"].choices)
        self.assertEqual(set(actions) - {""}, {"run_now"})  # deletes go one by one, checked

    def test_the_run_now_button_queues_a_run(self) -> None:
        page = self.client.get(self.change)
        run_url = reverse("admin:mlcore_clustering_run", args=[self.clustering.pk])
        self.assertContains(page, f'action="{run_url}"')
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(run_url)
        self.assertRedirects(response, self.change, fetch_redirect_response=False)
        (message,) = self.messages_of(response)
        self.assertRegex(message, rf"^Queued a run of value \(task {TASK_ID}\)\.$")
        self.assertEqual(len(callbacks), 1)
        # a GET changes nothing
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            self.assertRedirects(self.client.get(run_url), self.change, fetch_redirect_response=False)
        self.assertEqual(callbacks, [])

    def test_the_change_page_shows_the_cluster_profiles(self) -> None:
        page = self.client.get(self.change)
        self.assertContains(page, "No profiles before the first successful run.")
        self.run_now()
        version = ModelVersion.objects.get(task="clusters")
        big = Segment.objects.get(kind="cluster", definition__cluster=0)
        small = Segment.objects.get(kind="cluster", definition__cluster=1)
        page = self.client.get(self.change)
        self.assertEqual(page.status_code, 200)
        html = page.content.decode()
        self.assertIn(f"Version {version.pk}, kmeans, trained", html)
        self.assertIn("2 clusters over 12 customers, silhouette", html)
        self.assertIn("<h3>Cluster 0: high attributes.spend, high attributes.visits</h3>", html)
        self.assertIn("<h3>Cluster 1: low attributes.spend, low attributes.visits</h3>", html)
        for segment, size, share in ((big, 7, 58), (small, 5, 42)):
            self.assertInHTML(
                f"<p>{size} customers, {share}% of all; segment "
                f'<a href="{reverse("admin:campaigns_segment_change", args=[segment.pk])}">{segment.name}</a> '
                f"({size} members).</p>",
                html,
            )
        # the big spenders' spend: their mean against everyone's, at a high percentile, highlighted
        big_mean = sum(s for s, _ in [(900 + 10 * i, 0) for i in range(7)]) / 7
        everyone = (big_mean * 7 + sum(10 + 2 * i for i in range(5))) / 12
        spend = next(f for f in version.result["profiles"][0]["features"] if f["feature"] == "attributes.spend")
        self.assertInHTML(
            f'<tr class="distinctive"><td><strong>attributes.spend</strong></td><td>{big_mean:,.2f}</td>'
            f"<td>{everyone:,.2f}</td><td><strong>{round(spend['percentile'] * 100)} ↑</strong></td>"
            f"<td><strong>{spend['word']}</strong></td></tr>",
            html,
        )

    def test_delete_is_refused_while_segments_need_the_clustering(self) -> None:
        self.run_now()
        ids = sorted(Segment.objects.filter(kind="cluster").values_list("pk", flat=True))
        delete = reverse("admin:mlcore_clustering_delete", args=[self.clustering.pk])
        response = self.client.get(delete)
        self.assertRedirects(response, self.change, fetch_redirect_response=False)
        self.assertEqual(
            self.messages_of(response),
            [
                f"value cannot be deleted while segment(s) {ids[0]}, {ids[1]} use it: delete those first, "
                "or untick enabled to stop its runs."
            ],
        )
        self.assertTrue(Clustering.objects.filter(pk=self.clustering.pk).exists())

        Segment.objects.filter(pk__in=ids).delete()
        self.assertEqual(self.client.get(delete).status_code, 200)  # the confirmation page
        response = self.client.post(delete, {"post": "yes"})
        self.assertRedirects(response, CLUSTERINGS, fetch_redirect_response=False)
        self.assertEqual((Clustering.objects.count(), ModelVersion.objects.count()), (0, 0))


class ClusterSegmentAdminTests(MlAdminTestCase):
    def test_a_cluster_segment_shows_its_profile(self) -> None:
        plant_customers()
        clustering = make_clustering()
        clustering_refresh(clustering.pk)
        segment = Segment.objects.get(kind="cluster", definition__cluster=1)
        label = ModelVersion.objects.get(task="clusters").result["profiles"][1]["label"]
        page = self.client.get(reverse("admin:campaigns_segment_change", args=[segment.pk]))
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, f"<h3>Cluster 1: {label}</h3>")
        self.assertEqual(label, "low attributes.spend, low attributes.visits")
        self.assertContains(page, "5 customers, 42% of all.")
        self.assertContains(page, f'href="{reverse("admin:mlcore_clustering_change", args=[clustering.pk])}">value</a>')

        rules = Segment.objects.create(name="germans", definition={"field": "country", "op": "eq", "value": "DE"})
        page = self.client.get(reverse("admin:campaigns_segment_change", args=[rules.pk]))
        self.assertNotContains(page, "cluster profile")

    def test_the_definition_editor_checks_cluster_and_affinity_definitions(self) -> None:
        form = SegmentForm(data={"name": "x", "kind": "cluster", "definition": '{"clustering": 999999, "cluster": -2}'})
        self.assertFalse(form.is_valid())
        self.assertEqual(
            form.errors["definition"],
            [
                "/clustering: unknown clustering 999999",
                "/cluster: must be a cluster number (0, 1, …; -1 for DBSCAN noise)",
            ],
        )
        form = SegmentForm(data={"name": "x", "kind": "affinity", "definition": '{"sku": "a|b", "within_days": 0}'})
        self.assertFalse(form.is_valid())
        self.assertEqual(
            form.errors["definition"],
            ["/sku: must not contain '|'", "/within_days: must be a whole number from 1 to 36500"],
        )
        form = SegmentForm(data={"name": "likely B", "kind": "affinity", "definition": '{"sku": "B"}'})
        self.assertTrue(form.is_valid(), form.errors)
        self.assertEqual(form.save().definition, {"sku": "B"})


class ModelVersionAdminTests(MlAdminTestCase):
    def test_versions_are_listed_and_shown_read_only(self) -> None:
        version = ModelVersion.objects.create(
            task="clusters",
            scope="clustering:3",
            algorithm="kmeans",
            status="succeeded",
            is_champion=True,
            metrics={"k": 3, "silhouette": 0.61},
            params={"features": ["monetary"]},
            trained_at=timezone.now(),
            duration_ms=12_345,
        )
        failed = ModelVersion.objects.create(
            task="rules", algorithm="eclat", status="failed", error="MemoryError: too many itemsets"
        )
        response = self.client.get(reverse("admin:mlcore_modelversion_changelist"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual([v.pk for v in response.context["cl"].result_list], [failed.pk, version.pk])
        self.assertContains(response, "12.3 s")
        filtered = self.client.get(reverse("admin:mlcore_modelversion_changelist"), {"status__exact": "failed"})
        self.assertEqual([v.pk for v in filtered.context["cl"].result_list], [failed.pk])

        page = self.client.get(reverse("admin:mlcore_modelversion_change", args=[version.pk]))
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, "<pre>{\n  &quot;k&quot;: 3,\n  &quot;silhouette&quot;: 0.61\n}</pre>", html=False)
        self.assertNotContains(page, 'type="submit" value="Save"')
        page = self.client.get(reverse("admin:mlcore_modelversion_change", args=[failed.pk]))
        self.assertContains(page, "MemoryError: too many itemsets")
        self.assertEqual(self.client.get(reverse("admin:mlcore_modelversion_add")).status_code, 403)


class RulesBrowserTests(MlAdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.old = rules_version()
        self.old_rule = make_rule(self.old, 1, ["A-1"], ["C"])
        self.champion = rules_version(is_champion=True)
        self.r1 = make_rule(self.champion, 1, ["A-1"], ["B"], support=0.125, confidence=0.75, lift=4.0)
        self.r2 = make_rule(self.champion, 2, ["A-10", "B"], ["C"], support=0.2, confidence=0.4, lift=3.0)

    def listed(self, **params) -> list[int]:
        response = self.client.get(RULES, params)
        self.assertEqual(response.status_code, 200)
        return [rule.pk for rule in response.context["cl"].result_list]

    def test_it_shows_the_champions_rules_formatted(self) -> None:
        self.assertEqual(self.listed(), [self.r1.pk, self.r2.pk])
        response = self.client.get(RULES)
        self.assertContains(response, "A-1 → B")
        self.assertContains(response, "A-10, B → C")
        for text in ("12.50%", "75.0%", "4.00", "20.00%", "40.0%", "3.00"):
            self.assertContains(response, text)
        self.assertContains(response, f'href="{MINE}"')

    def test_another_version_and_sku_search(self) -> None:
        self.assertEqual(self.listed(model_version=self.old.pk), [self.old_rule.pk])
        self.assertEqual(self.listed(q="A-1"), [self.r1.pk])
        self.assertEqual(self.listed(q="B"), [self.r1.pk, self.r2.pk])
        self.assertEqual(self.listed(q="B C"), [self.r2.pk])
        self.assertEqual(self.listed(q="A"), [])
        self.assertEqual(self.listed(o="3"), [self.r2.pk, self.r1.pk])  # by confidence, ascending

    def test_it_is_read_only(self) -> None:
        page = self.client.get(reverse("admin:mlcore_associationrule_change", args=[self.r1.pk]))
        self.assertEqual(page.status_code, 200)
        self.assertNotContains(page, 'value="Save"')
        self.assertEqual(self.client.get(reverse("admin:mlcore_associationrule_add")).status_code, 403)

    def test_mine_rules_now_checks_the_form_then_queues_the_run(self) -> None:
        page = self.client.get(MINE)
        self.assertContains(page, f"The champion now is version {self.champion.pk}")
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(MINE, {"min_support": "0", "min_confidence": "1.5", "days": "-3"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["form"].errors,
            {
                "min_support": ["must be a number in (0, 1]"],
                "min_confidence": ["must be a number in (0, 1]"],
                "days": ["must be a whole number >= 1"],
            },
        )
        self.assertEqual(callbacks, [])

        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(MINE, {"min_support": "0.02", "max_len": "3"})
        self.assertRedirects(response, RULES, fetch_redirect_response=False)
        (message,) = self.messages_of(response)
        task_id = re.search(TASK_ID, message).group(0)
        self.assertEqual(
            message, f"Queued a rules run (task {task_id}); the new rules become the champion when it finishes."
        )
        with mock.patch.object(association_rules_mine, "apply_async") as apply_async:
            (callback,) = callbacks
            callback()
        apply_async.assert_called_once_with(kwargs={"min_support": 0.02, "max_len": 3}, task_id=task_id)

    def test_mining_needs_the_permission_to_add_model_versions(self) -> None:
        staff = User.objects.create_user("viewer", password="pw", is_staff=True)
        staff.user_permissions.add(Permission.objects.get(codename="view_associationrule"))
        self.client.force_login(staff)
        self.assertEqual(self.client.get(RULES).status_code, 200)
        self.assertNotContains(self.client.get(RULES), f'href="{MINE}"')
        self.assertEqual(self.client.post(MINE, {"min_support": "0.1"}).status_code, 403)


class MinedRulesEndToEndTests(MlAdminTestCase):
    def test_rules_mined_from_orders_show_in_the_browser(self) -> None:
        from mlcore.affinity import rules_mine

        ann = make_customer("ann")
        for order in range(4):
            for sku in ("A", "B"):
                make_touchpoint(ann, f"{order}-{sku}", "purchase", order_id=f"o{order}", sku=sku, revenue=Decimal(1))
        version = rules_mine(min_support=0.5, min_confidence=0.5)
        response = self.client.get(RULES)
        self.assertEqual(
            [str(rule) for rule in response.context["cl"].result_list],
            [str(rule) for rule in AssociationRule.objects.filter(model_version=version).order_by("rank")],
        )
        self.assertContains(response, "A → B")
        self.assertContains(response, "B → A")
