"""The learning API: train now (or queued on the gpu queue, run by a real worker), promote
and rollback, the training curve in a version's detail, a customer's scores. Bad input is a
400 naming the field with nothing written; a run the data cannot train is a 409 with the
failed version kept; unknown ids are 404."""

from __future__ import annotations

import time

from django.test import TransactionTestCase

from marketing.models import Customer
from marketing.services import api_key_create
from mlcore.models import CustomerScore, ModelVersion
from mlcore.propensity import propensity_train
from tests.api_helpers import ApiTestCase, key_client
from tests.celery_helpers import CeleryWorker, requires_celery_worker
from tests.learning_helpers import FAST, NOW, OneThread, plant

TRAIN = "/api/v1/model-versions/train"
UNTRAINED = {**FAST, "lr": 1e-7, "max_epochs": 1}
# The API trains on the sends before the real now: the planted sends (ten days before NOW,
# yesterday) are the same rows.
BODY = {"task": "propensity", "hidden": [32], "max_epochs": 60, "batch_size": 256, "baselines": False, "days": 3650}


class LearningApiTests(OneThread, ApiTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.ids = plant(300)

    def test_train_now_answers_with_the_new_champion_and_its_curve(self) -> None:
        response = self.post_json(f"{TRAIN}?wait=true", BODY)
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        version = ModelVersion.objects.get()
        self.assertEqual(body["id"], version.pk)
        self.assertEqual(
            (body["task"], body["status"], body["is_champion"], body["device"]),
            ("propensity", "succeeded", True, "cpu"),
        )
        self.assertGreater(body["metrics"]["auc"], 0.75)
        self.assertEqual(len(body["curve"]), body["metrics"]["epochs"])
        self.assertEqual(body["curve"], version.result["curve"])
        self.assertEqual(body["artifact"], version.artifact)
        self.assertEqual(CustomerScore.objects.filter(model_version=version).count(), 300)
        # The detail shows the same.
        detail = self.api.get(f"/api/v1/model-versions/{version.pk}").json()
        self.assertEqual(detail["curve"], body["curve"])
        self.assertEqual(detail["metrics"]["auc"], body["metrics"]["auc"])

    def test_data_that_cannot_train_is_409_and_the_failed_version_is_kept(self) -> None:
        response = self.post_json(f"{TRAIN}?wait=1", {"task": "uplift", "days": 3650})
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {
                "detail": "The uplift training failed: 300 sends and no held-out customers in the last 3650 days: "
                "uplift is learnt from campaigns with a holdout. It is recorded as a failed model version; the "
                "champion is unchanged."
            },
        )
        version = ModelVersion.objects.get()
        self.assertEqual((version.task, version.status, version.is_champion), ("uplift", "failed", False))

    def test_bad_options_are_400_naming_each_and_nothing_is_written(self) -> None:
        cases = [
            ({"task": "churn"}, [("task", 'must be "propensity" or "uplift"')]),
            ({}, [("task", "This field is required.")]),
            ({"task": "propensity", "epochs": 3}, [("epochs", "unknown option")]),
            ({"task": "propensity", "method": "x_learner"}, [("method", "not an option of propensity training")]),
            ({"task": "uplift", "hidden": [8]}, [("hidden", "not an option of uplift training")]),
            ({"task": "propensity", "days": 0}, [("days", "Ensure this value is greater than or equal to 1.")]),
            ({"task": "uplift", "method": "s_learner"}, [("method", '"s_learner" is not a valid choice.')]),
            ({"task": "propensity", "campaign_ids": []}, [("campaign_ids", "This list may not be empty.")]),
        ]
        for body, errors in cases:
            for wait in ("?wait=true", ""):
                with self.captureOnCommitCallbacks(execute=False) as callbacks:
                    response = self.post_json(f"{TRAIN}{wait}", body)
                self.assertEqual(response.status_code, 400, body)
                self.assertEqual(
                    response.json()["errors"], [{"row": None, "field": f, "message": m} for f, m in errors], body
                )
                self.assertEqual(callbacks, [])
        response = self.post_json(f"{TRAIN}?wait=maybe", BODY)
        self.assertEqual(
            response.json()["errors"], [{"row": None, "field": "wait", "message": "must be true or false"}]
        )
        self.assertFalse(ModelVersion.objects.exists())

    def test_promote_and_rollback(self) -> None:
        weak = propensity_train(now=NOW, **UNTRAINED)
        strong = propensity_train(now=NOW, **FAST)
        loser = propensity_train(now=NOW, **UNTRAINED)
        self.assertEqual(ModelVersion.objects.get(is_champion=True), strong)

        response = self.api.post(f"/api/v1/model-versions/{loser.pk}/rollback")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {"detail": f"Model version {loser.pk} is not the champion: only the champion is rolled back."},
        )
        response = self.api.post(f"/api/v1/model-versions/{strong.pk}/rollback")
        self.assertEqual(response.status_code, 200)
        self.assertEqual((response.json()["id"], response.json()["is_champion"]), (weak.pk, True))
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {weak.pk})

        response = self.api.post(f"/api/v1/model-versions/{loser.pk}/promote")
        self.assertEqual(response.status_code, 200)
        self.assertEqual((response.json()["id"], response.json()["is_champion"]), (loser.pk, True))
        self.assertEqual(ModelVersion.objects.get(is_champion=True), loser)
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {loser.pk})

        response = self.post_json(f"/api/v1/model-versions/{loser.pk}/rollback", {"to": strong.pk})
        self.assertEqual((response.status_code, response.json()["id"]), (200, strong.pk))
        response = self.api.post(f"/api/v1/model-versions/{strong.pk}/promote")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(response.json(), {"detail": f"Model version {strong.pk} is already the champion."})
        response = self.post_json(f"/api/v1/model-versions/{strong.pk}/rollback", {"to": "x"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [{"row": None, "field": "to", "message": "A valid integer is required."}]
        )
        for path in ("/api/v1/model-versions/999999/promote", "/api/v1/model-versions/999999/rollback"):
            response = self.api.post(path)
            self.assertEqual(
                (response.status_code, response.json()), (404, {"detail": "Model version 999999 does not exist."})
            )
        self.assertEqual(ModelVersion.objects.get(is_champion=True), strong)

    def test_a_customer_s_scores(self) -> None:
        customer = Customer.objects.get(pk=self.ids[0])
        path = f"/api/v1/customers/{customer.external_id}/scores"
        self.assertEqual(
            self.api.get(path).json(),
            {"customer_id": customer.pk, "external_id": customer.external_id, "propensity": None, "uplift": None},
        )
        version = propensity_train(now=NOW, **FAST)
        score = CustomerScore.objects.get(customer=customer).score
        expected = {
            "customer_id": customer.pk,
            "external_id": customer.external_id,
            "propensity": {
                "score": score,
                "model_version": version.pk,
                "trained_at": version.trained_at.isoformat().replace("+00:00", "Z"),
            },
            "uplift": None,
        }
        self.assertEqual(self.api.get(path).json(), expected)
        self.assertEqual(self.api.get(f"/api/v1/customers/{customer.pk}/scores/").json(), expected)  # by id
        response = self.api.get("/api/v1/customers/nobody/scores")
        self.assertEqual(
            (response.status_code, response.json()), (404, {"detail": "No customer with external id or id 'nobody'."})
        )
        self.assertEqual(key_client("wrong").get(path).status_code, 401)


@requires_celery_worker
class QueuedTrainingTests(OneThread, TransactionTestCase):
    """A queued run goes to the gpu queue and a worker consuming it trains the model."""

    def test_a_queued_run_is_trained_by_a_gpu_queue_worker(self) -> None:
        plant(300)
        _, raw_key = api_key_create("crm")
        worker = CeleryWorker(queues=["gpu"])
        worker.start()
        self.addCleanup(worker.stop)
        response = key_client(raw_key).post(TRAIN, BODY, format="json")
        self.assertEqual(response.status_code, 202)
        body = response.json()
        self.assertEqual(
            body,
            {
                "task_id": body["task_id"],
                "task": "propensity",
                "options": {k: v for k, v in BODY.items() if k != "task"},
                "message": "Training queued on the gpu queue; see /api/v1/model-versions.",
            },
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            version = ModelVersion.objects.filter(status__in=["succeeded", "failed"]).first()
            if version is not None:
                break
            time.sleep(0.5)
        else:
            self.fail(f"no version within 120 s; worker said:\n{worker.output()}")
        self.assertEqual(
            (version.task, version.status, version.is_champion), ("propensity", "succeeded", True), version.error
        )
        self.assertEqual(CustomerScore.objects.filter(model_version=version).count(), 300)
