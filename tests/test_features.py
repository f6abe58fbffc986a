"""Customer feature vectors from the database (mlcore.features): the exact value of every
feature for a small cast, missing values as NaN, erased customers left out, and the
messages for bad feature lists. Runs on PostgreSQL and SQLite alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from django.test import TestCase

from marketing.models import Customer, Touchpoint
from marketing.rfm import rfm_refresh
from mlcore.features import (
    DEFAULT_FEATURES,
    ENGAGEMENT_DAYS,
    FEATURES,
    customer_features,
    feature_errors,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NAN = math.nan
ENGAGEMENT = [
    "email_open_rate",
    "email_click_rate",
    "sms_open_rate",
    "sms_click_rate",
    "push_open_rate",
    "push_click_rate",
]

_event_ids = iter(range(1, 10**9))


def tp(customer: Customer, kind: str, at: datetime, channel: str = "", **fields) -> None:
    Touchpoint.objects.create(
        customer=customer, kind=kind, channel=channel, occurred_at=at, event_id=f"f{next(_event_ids)}", **fields
    )


def purchase(customer: Customer, order_id: str, revenue: int, at: datetime) -> None:
    tp(customer, "purchase", at, channel="web", order_id=order_id, sku="A-1", revenue=Decimal(revenue))


def customer(external_id: str, created: timedelta, **fields) -> Customer:
    made = Customer.objects.create(external_id=external_id, **fields)
    # created_at is set by the database; put it where the test wants it
    Customer.objects.filter(pk=made.pk).update(created_at=NOW - created)
    return made


class CustomerFeatureTests(TestCase):
    """ann buys twice, engages by email and SMS; bob bought once, opens without sends; cat
    never bought, one email sent exactly at the window's edge; dan arrived after the RFM
    refresh; eve is erased."""

    @classmethod
    def setUpTestData(cls) -> None:
        cls.ann = customer(
            "ann",
            timedelta(days=100),
            last_seen_at=NOW - timedelta(days=2, hours=12),
            attributes={
                "age": 34,
                "score": 2.5,
                "vip": True,
                "tier": "gold",
                "code": "2",
                "flag": "true",
                "nothing": None,
                "list": [1],
                "nested": {"a": 1},
            },
        )
        cls.bob = customer("bob", timedelta(days=10, hours=6), attributes={"age": -3, "vip": False, "score": 10**12})
        cls.cat = customer("cat", timedelta(0), last_seen_at=NOW - timedelta(days=400), attributes={})
        cls.eve = customer(
            "eve", timedelta(days=5), last_seen_at=NOW, attributes={"age": 50}, erased_at=NOW - timedelta(days=1)
        )

        purchase(cls.ann, "a1", 30, NOW - timedelta(days=10))
        purchase(cls.ann, "a2", 20, NOW - timedelta(days=4))
        purchase(cls.bob, "b1", 100, NOW - timedelta(days=1))
        purchase(cls.eve, "e1", 500, NOW - timedelta(days=1))

        day = timedelta(days=1)
        # ann, email: 4 sends, 3 opens, 1 click in the window; an old send and open outside it
        for n in range(4):
            tp(cls.ann, "sent", NOW - (n + 1) * day, "email")
        for n in range(3):
            tp(cls.ann, "open", NOW - (n + 1) * day, "email")
        tp(cls.ann, "click", NOW - day, "email")
        tp(cls.ann, "sent", NOW - 200 * day, "email")
        tp(cls.ann, "open", NOW - 200 * day, "email")
        # ann, SMS: 2 sends, no open, 1 click; push: nothing; another channel's sends do not count
        tp(cls.ann, "sent", NOW - day, "sms")
        tp(cls.ann, "sent", NOW - 2 * day, "sms")
        tp(cls.ann, "click", NOW - day, "sms")
        tp(cls.ann, "sent", NOW - day, "whatsapp")
        tp(cls.ann, "open", NOW - day, "whatsapp")
        # bob opened and clicked push messages nobody recorded sending: no rate
        tp(cls.bob, "open", NOW - day, "push")
        tp(cls.bob, "click", NOW - day, "push")
        # cat: a send exactly ENGAGEMENT_DAYS ago counts, one a second earlier and one in the
        # future (after `now`) do not; one open
        edge = NOW - timedelta(days=ENGAGEMENT_DAYS)
        tp(cls.cat, "sent", edge, "email")
        tp(cls.cat, "sent", edge - timedelta(seconds=1), "email")
        tp(cls.cat, "sent", NOW + timedelta(hours=1), "email")
        tp(cls.cat, "open", NOW - day, "email")
        # eve (erased) engaged too: she is left out whatever she did
        tp(cls.eve, "sent", NOW - day, "email")
        tp(cls.eve, "open", NOW - day, "email")

        rfm_refresh(NOW.date())
        # dan arrives after the refresh: no RFM row at all
        cls.dan = customer("dan", timedelta(days=1), attributes={"age": 20})

    def frame(self, names) -> pd.DataFrame:
        return customer_features(names, now=NOW)

    def expected(self, columns: dict[str, list[float]]) -> pd.DataFrame:
        index = pd.Index([self.ann.pk, self.bob.pk, self.cat.pk, self.dan.pk], dtype=np.int64, name="customer_id")
        return pd.DataFrame({name: np.array(values, dtype=np.float64) for name, values in columns.items()}, index=index)

    def test_rfm_features_come_from_the_rfm_table(self) -> None:
        pd.testing.assert_frame_equal(
            self.frame(["recency_days", "frequency", "monetary"]),
            self.expected(
                {
                    # ann, bob, cat (no purchase: null row), dan (no row)
                    "recency_days": [4, 1, NAN, NAN],
                    "frequency": [2, 1, NAN, NAN],
                    "monetary": [50, 100, NAN, NAN],
                }
            ),
            check_exact=True,
        )

    def test_tenure_and_days_since_seen_count_back_from_now(self) -> None:
        pd.testing.assert_frame_equal(
            self.frame(["tenure_days", "days_since_seen"]),
            self.expected({"tenure_days": [100, 10.25, 0, 1], "days_since_seen": [2.5, NAN, 400, NAN]}),
            check_exact=True,
        )
        # another `now` moves them all by the same amount
        later = customer_features(["tenure_days"], now=NOW + timedelta(days=1))
        self.assertEqual(later["tenure_days"].tolist(), [101, 11.25, 1, 2])

    def test_engagement_rates_per_channel_over_the_window(self) -> None:
        pd.testing.assert_frame_equal(
            self.frame(ENGAGEMENT),
            self.expected(
                {
                    "email_open_rate": [0.75, NAN, 1.0, NAN],
                    "email_click_rate": [0.25, NAN, 0.0, NAN],
                    "sms_open_rate": [0.0, NAN, NAN, NAN],
                    "sms_click_rate": [0.5, NAN, NAN, NAN],
                    "push_open_rate": [NAN, NAN, NAN, NAN],
                    "push_click_rate": [NAN, NAN, NAN, NAN],
                }
            ),
            check_exact=True,
        )

    def test_one_channel_alone(self) -> None:
        pd.testing.assert_frame_equal(
            self.frame(["sms_click_rate"]), self.expected({"sms_click_rate": [0.5, NAN, NAN, NAN]}), check_exact=True
        )

    def test_attributes_numbers_booleans_and_everything_else_missing(self) -> None:
        names = [
            "attributes.age",
            "attributes.score",
            "attributes.vip",
            "attributes.tier",
            "attributes.nothing",
            "attributes.list",
            "attributes.nested",
            "attributes.absent",
        ]
        pd.testing.assert_frame_equal(
            self.frame(names),
            self.expected(
                {
                    "attributes.age": [34, -3, NAN, 20],
                    "attributes.score": [2.5, 10**12, NAN, NAN],
                    "attributes.vip": [1, 0, NAN, NAN],
                    "attributes.tier": [NAN] * 4,
                    "attributes.nothing": [NAN] * 4,
                    "attributes.list": [NAN] * 4,
                    "attributes.nested": [NAN] * 4,
                    "attributes.absent": [NAN] * 4,
                }
            ),
            check_exact=True,
        )

    # On SQLite, Django reads a JSON string from JSON_EXTRACT as bare text and json-decodes
    # it again, so "2" becomes the number 2 and "true" the boolean: mlcore.features must not
    # read attributes through key lookups there (see the report of this test's author).
    def test_a_string_that_reads_as_a_number_or_boolean_is_missing(self) -> None:
        pd.testing.assert_frame_equal(
            self.frame(["attributes.code", "attributes.flag"]),
            self.expected({"attributes.code": [NAN] * 4, "attributes.flag": [NAN] * 4}),
            check_exact=True,
        )

    def test_the_columns_come_in_the_order_asked_for(self) -> None:
        frame = self.frame(["attributes.age", "monetary", "email_open_rate", "tenure_days"])
        self.assertEqual(list(frame.columns), ["attributes.age", "monetary", "email_open_rate", "tenure_days"])
        self.assertEqual(frame.loc[self.ann.pk].tolist(), [34, 50, 0.75, 100])

    def test_the_default_features(self) -> None:
        self.assertEqual(
            DEFAULT_FEATURES,
            ("recency_days", "frequency", "monetary", "tenure_days", "email_open_rate", "email_click_rate"),
        )
        pd.testing.assert_frame_equal(
            customer_features(now=NOW),
            self.expected(
                {
                    "recency_days": [4, 1, NAN, NAN],
                    "frequency": [2, 1, NAN, NAN],
                    "monetary": [50, 100, NAN, NAN],
                    "tenure_days": [100, 10.25, 0, 1],
                    "email_open_rate": [0.75, NAN, 1.0, NAN],
                    "email_click_rate": [0.25, NAN, 0.0, NAN],
                }
            ),
            check_exact=True,
        )

    def test_every_catalogue_feature_at_once(self) -> None:
        frame = self.frame(list(FEATURES))
        self.assertEqual(list(frame.columns), list(FEATURES))
        self.assertEqual(list(frame.index), [self.ann.pk, self.bob.pk, self.cat.pk, self.dan.pk])
        self.assertEqual(set(frame.dtypes), {np.dtype(np.float64)})
        np.testing.assert_array_equal(
            frame.loc[self.ann.pk].to_numpy(), [4, 2, 50, 100, 2.5, 0.75, 0.25, 0.0, 0.5, NAN, NAN]
        )
        np.testing.assert_array_equal(
            frame.loc[self.cat.pk].to_numpy(), [NAN, NAN, NAN, 0, 400, 1.0, 0.0, NAN, NAN, NAN, NAN]
        )

    def test_a_bad_list_raises_with_every_problem(self) -> None:
        with self.assertRaises(ValueError) as raised:
            customer_features(["frequency", "nope", 3])
        self.assertEqual(
            str(raised.exception),
            "item 1: unknown feature 'nope'; use one of " + ", ".join(FEATURES) + " or attributes.<key>; "
            "item 2: must be a string",
        )


class EmptyPopulationTests(TestCase):
    def test_no_customers_gives_an_empty_frame_with_the_columns(self) -> None:
        Customer.objects.create(external_id="gone", erased_at=NOW)
        frame = customer_features(["monetary", "tenure_days", "email_open_rate", "attributes.age"], now=NOW)
        self.assertEqual(frame.shape, (0, 4))
        self.assertEqual(list(frame.columns), ["monetary", "tenure_days", "email_open_rate", "attributes.age"])
        self.assertEqual(set(frame.dtypes), {np.dtype(np.float64)})


class FeatureErrorsTests(TestCase):
    def test_a_usable_list_has_no_errors(self) -> None:
        self.assertEqual(feature_errors([]), [])
        self.assertEqual(feature_errors([*FEATURES, "attributes.tier", "attributes.a-b_9"]), [])

    def test_it_must_be_a_list(self) -> None:
        self.assertEqual(feature_errors("monetary"), ["must be a list of feature names"])
        self.assertEqual(feature_errors(None), ["must be a list of feature names"])
        self.assertEqual(feature_errors(("monetary",)), ["must be a list of feature names"])

    def test_each_problem_names_its_item(self) -> None:
        self.assertEqual(
            feature_errors(
                [1, "attributes.bad key", "attributes.", "attributes.-x", "recency", "monetary", "monetary"]
            ),
            [
                "item 0: must be a string",
                "item 1: 'attributes.bad key' is not a valid attribute key",
                "item 2: 'attributes.' is not a valid attribute key",
                "item 3: 'attributes.-x' is not a valid attribute key",
                "item 4: unknown feature 'recency'; use one of " + ", ".join(FEATURES) + " or attributes.<key>",
                "features are listed more than once",
            ],
        )

    def test_an_attribute_key_is_at_most_64_characters(self) -> None:
        self.assertEqual(feature_errors(["attributes." + "k" * 64]), [])
        self.assertEqual(
            feature_errors(["attributes." + "k" * 65]),
            [f"item 0: {'attributes.' + 'k' * 65!r} is not a valid attribute key"],
        )
