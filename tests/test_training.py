"""Training rows from the touchpoint log (mlcore.training): one row per send with the label
in (send, send + window], held-out sends as untreated rows, features from before the send
only (adding touchpoints after it changes nothing), logged decision features winning, and
the live `decision_features` giving the same vector. PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.test import TestCase

from marketing.models import Customer, Touchpoint
from mlcore import training
from mlcore.training import FEATURE_NAMES, MISSING_DAYS, decision_features, encode_arms, training_set

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
S = NOW - timedelta(days=10)  # the send time of most rows
DAY = timedelta(days=1)
F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def rows(**options) -> training.TrainingSet:
    return training_set(days=90, now=NOW, campaign_ids=[1], **options)


class TrainingSetTests(TestCase):
    def setUp(self) -> None:
        self.count = 0
        self.ann, self.ben, self.cat, self.dan = (
            Customer.objects.create(external_id=name) for name in ("ann", "ben", "cat", "dan")
        )
        Customer.objects.update(created_at=NOW - timedelta(days=100))
        # ann: history before the send, sent email creative 11, buys 2 days later.
        self.touch(self.ann, "purchase", S - timedelta(days=30), order_id="a1", revenue="40.00")
        self.touch(self.ann, "purchase", S - timedelta(days=20), order_id="a2", sku="X", revenue="10.00")
        self.touch(self.ann, "purchase", S - timedelta(days=20), order_id="a2", sku="Y", revenue="5.00")
        self.touch(self.ann, "refund", S - timedelta(days=19), order_id="a2", revenue="5.00")
        self.touch(self.ann, "open", S - timedelta(days=5), channel="email")
        self.touch(self.ann, "open", S - timedelta(days=200), channel="email")  # older than 180 days
        self.touch(self.ann, "click", S - timedelta(days=5), channel="email")
        self.touch(self.ann, "sent", S - timedelta(days=6), channel="email", campaign_id=9)
        self.send_ann = self.touch(self.ann, "sent", S, channel="email", campaign_id=1, creative_id=11)
        self.touch(self.ann, "purchase", S + 2 * DAY, order_id="a3", revenue="20.00")
        # ben: sent sms creative 12, buys 8 days later (after the 7-day window): label 0.
        self.send_ben = self.touch(self.ben, "sent", S, channel="sms", campaign_id=1, creative_id=12)
        self.touch(self.ben, "purchase", S + 8 * DAY, order_id="b1", revenue="20.00")
        # cat: held out, converts within the window: an untreated positive row.
        self.held_cat = self.touch(self.cat, "held_out", S, channel="email", campaign_id=1, creative_id=11)
        self.touch(self.cat, "purchase", S + DAY, order_id="c1", revenue="9.00")
        # dan: sent 3 days ago: the window has not closed, so no row.
        self.touch(self.dan, "sent", NOW - 3 * DAY, channel="email", campaign_id=1, creative_id=11)
        # A send older than the 90 days: no row.
        self.touch(self.dan, "sent", NOW - 100 * DAY, channel="email", campaign_id=1, creative_id=11)

    def touch(self, who: Customer, kind: str, occurred_at: datetime, **fields) -> Touchpoint:
        self.count += 1
        if "revenue" in fields:
            fields["revenue"] = Decimal(fields["revenue"])
        return Touchpoint.objects.create(
            customer=who, kind=kind, occurred_at=occurred_at, event_id=f"ev{self.count}", **fields
        )

    def test_one_row_per_send_with_label_group_and_arms(self) -> None:
        data = rows()
        self.assertEqual(data.touchpoint_id.tolist(), [self.send_ann.pk, self.send_ben.pk, self.held_cat.pk])
        self.assertEqual(data.customer_id.tolist(), [self.ann.pk, self.ben.pk, self.cat.pk])
        self.assertEqual(data.y.tolist(), [1.0, 0.0, 1.0])
        self.assertEqual(data.treated.tolist(), [True, True, False])
        self.assertEqual(data.channels, ["<unknown>", "email", "sms"])
        self.assertEqual(data.creatives, [0, 11, 12])
        self.assertEqual(data.channel.tolist(), [1, 2, 1])
        self.assertEqual(data.creative.tolist(), [1, 2, 1])
        self.assertEqual(data.feature_names, list(FEATURE_NAMES))

    def test_features_come_from_before_the_send(self) -> None:
        data = rows()
        ann = data.X[0]
        self.assertAlmostEqual(float(ann[F["recency_days"]]), 20.0, places=4)
        self.assertEqual(float(ann[F["frequency_365"]]), 2.0)  # orders a1, a2 (a3 is after)
        self.assertAlmostEqual(float(ann[F["monetary_365"]]), 50.0, places=4)  # 40 + 15 - 5
        self.assertEqual(float(ann[F["opens_180"]]), 1.0)
        self.assertEqual(float(ann[F["clicks_180"]]), 1.0)
        self.assertEqual(float(ann[F["sends_180"]]), 1.0)  # campaign 9's send; not the send itself
        self.assertAlmostEqual(float(ann[F["tenure_days"]]), 90.0, places=4)
        self.assertAlmostEqual(float(ann[F["days_since_seen"]]), 5.0, places=4)
        ben = data.X[1]  # nothing before the send
        self.assertEqual(ben.tolist(), [MISSING_DAYS, 0.0, 0.0, 0.0, 0.0, 0.0, 90.0, MISSING_DAYS])

    def test_touchpoints_after_the_send_change_no_feature(self) -> None:
        before = rows()
        for offset in (timedelta(0), timedelta(microseconds=1), DAY, 30 * DAY):
            self.touch(self.ann, "purchase", S + offset, order_id=f"late{offset}", revenue="1000.00")
            self.touch(self.ann, "open", S + offset, channel="email")
            self.touch(self.ann, "click", S + offset, channel="email")
            self.touch(self.ben, "visit", S + offset)
            self.touch(self.ben, "sent", S + offset, channel="email", campaign_id=9)
        after = rows()
        np.testing.assert_array_equal(after.X, before.X)
        self.assertEqual(after.touchpoint_id.tolist(), before.touchpoint_id.tolist())

    def test_logged_decision_features_win(self) -> None:
        Touchpoint.objects.filter(pk=self.send_ben.pk).update(
            properties={"features": {"channel": {"decision": {"opens_180": 7, "tenure_days": 3.5, "x": 1}}}}
        )
        Touchpoint.objects.filter(pk=self.send_ann.pk).update(
            properties={"features": {"creative": {"decision": {"clicks_180": "many"}}}}  # not a number: ignored
        )
        data = rows()
        self.assertEqual(float(data.X[1][F["opens_180"]]), 7.0)
        self.assertEqual(float(data.X[1][F["tenure_days"]]), 3.5)
        self.assertEqual(float(data.X[0][F["clicks_180"]]), 1.0)

    def test_the_campaign_goal_and_window_come_from_the_hook(self) -> None:
        previous = training._campaign_goals
        try:
            training.register_campaign_goals(lambda ids: {1: ("purchase", 9)})
            self.assertEqual(rows().y.tolist(), [1.0, 1.0, 1.0])  # ben's at 8 days counts
            training.register_campaign_goals(lambda ids: {1: ("signup", 7)})
            self.assertEqual(rows().y.tolist(), [0.0, 0.0, 0.0])
        finally:
            training._campaign_goals = previous

    def test_only_treated_rows_and_campaign_filter(self) -> None:
        self.assertEqual(
            rows(include_held_out=False).touchpoint_id.tolist(),
            [self.send_ann.pk, self.send_ben.pk],
        )
        self.assertEqual(training_set(days=90, now=NOW, campaign_ids=[9]).customer_id.tolist(), [self.ann.pk])
        self.assertEqual(len(training_set(days=90, now=NOW, campaign_ids=[2])), 0)
        self.assertEqual(len(training_set(days=90, now=NOW)), 4)  # campaigns 1 and 9

    def test_decision_features_match_the_training_row(self) -> None:
        data = rows()
        live = decision_features([self.ben.pk, 999_999, self.ann.pk], at=S)
        np.testing.assert_allclose(live[2], data.X[0], rtol=1e-6)
        np.testing.assert_allclose(live[0], data.X[1], rtol=1e-6)
        self.assertEqual(live[1].tolist(), [MISSING_DAYS, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, MISSING_DAYS])
        self.assertEqual(decision_features([], at=S).shape, (0, len(FEATURE_NAMES)))

    def test_encode_arms_maps_unknown_to_zero(self) -> None:
        channel, creative = encode_arms(["<unknown>", "email", "sms"], [0, 11, 12], ["sms", "push"], [12, 99])
        self.assertEqual(channel.tolist(), [2, 0])
        self.assertEqual(creative.tolist(), [2, 0])
