"""Rule segments: every operator and leaf against exact members of a small cast, bad
trees with exact JSON Pointers, one SQL statement per segment, preview and explain."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from campaigns.models import Segment, SegmentMembership
from campaigns.segments.rebuild import segment_rebuild
from campaigns.segments.rules import RuleError, RuleInvalid, segment_customers, validate_definition
from campaigns.segments.services import segment_explain, segment_preview
from marketing.models import Customer, CustomerRFM, Product, Touchpoint
from marketing.rfm import rfm_refresh
from mlcore.models import Clustering

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def days_ago(n: int) -> datetime:
    return NOW - timedelta(days=n)


def tp(customer: Customer, event_id: str, kind: str, at: datetime, **fields) -> None:
    Touchpoint.objects.create(customer=customer, event_id=event_id, kind=kind, occurred_at=at, **fields)


def field(name: str, op: str, value) -> dict:
    return {"field": name, "op": op, "value": value}


class RuleSegmentTestCase(TestCase):
    """The cast: alice (DE, gold, buyer, champion), bob (FR, silver, one big order), carol
    (DE, odd attribute types, unsubscribed), dave (US, nothing), erin (erased)."""

    @classmethod
    def setUpTestData(cls) -> None:
        cls.alice = Customer.objects.create(
            external_id="alice",
            email="alice@example.com",
            first_name="Alice",
            country="DE",
            attributes={"tier": "gold", "age": 34, "vip": True, "tags": ["a", "b"], "code": "2"},
            email_opt_in=True,
            last_seen_at=days_ago(1),
        )
        cls.bob = Customer.objects.create(
            external_id="bob",
            email="bob@shop.test",
            country="FR",
            attributes={"tier": "silver", "age": 2, "code": 2, "tags": "ab-cd", "vip": "true"},
            sms_opt_in=True,
        )
        cls.carol = Customer.objects.create(
            external_id="carol",
            email="carol@shop.test",
            first_name="Carol",
            country="DE",
            attributes={"tier": 5, "age": "old", "code": None},
            email_opt_in=True,
            unsubscribed_at=days_ago(3),
            last_seen_at=days_ago(40),
        )
        cls.dave = Customer.objects.create(
            external_id="dave",
            email="dave@shop.test",
            country="US",
            attributes={"nums": [1, 2]},
            push_opt_in=True,
            is_stub=True,
            last_seen_at=days_ago(10),
        )
        cls.erin = Customer.objects.create(
            external_id="erin",
            email="erased@invalid",
            country="DE",
            attributes={"tier": "gold", "age": 34},
            email_opt_in=True,
            erased_at=days_ago(2),
            last_seen_at=days_ago(1),
        )
        Product.objects.create(sku="A-1", name="Runner", category="shoes")
        Product.objects.create(sku="B-1", name="Cap", category="hats")
        # alice: order o1 (two lines) 5 days ago on the web, order o2 40 days ago in a shop
        tp(cls.alice, "a1", "purchase", days_ago(5), channel="web", order_id="o1", sku="A-1", revenue=Decimal(10))
        tp(cls.alice, "a2", "purchase", days_ago(5), channel="web", order_id="o1", sku="B-1", revenue=Decimal(5))
        tp(cls.alice, "a3", "purchase", days_ago(40), channel="pos", order_id="o2", sku="A-1", revenue=Decimal(20))
        tp(cls.alice, "a4", "open", days_ago(2), channel="email", campaign_id=7)
        tp(cls.bob, "b1", "purchase", days_ago(20), channel="web", order_id="o3", sku="B-1", revenue=Decimal(100))
        tp(cls.carol, "c1", "open", days_ago(1), channel="email", campaign_id=8)
        tp(cls.erin, "e1", "purchase", days_ago(1), channel="web", order_id="o4", sku="A-1", revenue=Decimal(500))
        rfm = {"as_of": date(2026, 11, 20), "computed_at": NOW}
        CustomerRFM.objects.create(
            customer=cls.alice,
            recency_days=5,
            frequency=2,
            monetary=Decimal(35),
            r_score=5,
            f_score=4,
            m_score=3,
            **rfm,
        )
        CustomerRFM.objects.create(
            customer=cls.bob,
            recency_days=20,
            frequency=1,
            monetary=Decimal(100),
            r_score=3,
            f_score=1,
            m_score=5,
            **rfm,
        )
        CustomerRFM.objects.create(customer=cls.carol, **rfm)  # no purchase: nulls
        CustomerRFM.objects.create(
            customer=cls.erin,
            recency_days=1,
            frequency=1,
            monetary=Decimal(500),
            r_score=5,
            f_score=5,
            m_score=5,
            **rfm,
        )

    def members(self, tree) -> set[str]:
        return set(segment_customers(tree, now=NOW).values_list("external_id", flat=True))

    def assertMembers(self, tree, expected: set[str]) -> None:
        self.assertEqual(self.members(tree), expected, tree)


class ModelFieldTests(RuleSegmentTestCase):
    def test_text_equality_operators(self) -> None:
        self.assertMembers(field("country", "eq", "DE"), {"alice", "carol"})
        self.assertMembers(field("country", "ne", "DE"), {"bob", "dave"})
        self.assertMembers(field("country", "in", ["FR", "US"]), {"bob", "dave"})
        self.assertMembers(field("country", "not_in", ["FR"]), {"alice", "carol", "dave"})
        self.assertMembers(field("country", "eq", "de"), set())  # exact, case-sensitive

    def test_text_ordering_and_contains(self) -> None:
        self.assertMembers(field("email", "contains", "EXAMPLE"), {"alice"})
        self.assertMembers(field("external_id", "gt", "bob"), {"carol", "dave"})
        self.assertMembers(field("external_id", "gte", "bob"), {"bob", "carol", "dave"})
        self.assertMembers(field("external_id", "lt", "bob"), {"alice"})
        self.assertMembers(field("external_id", "lte", "bob"), {"alice", "bob"})
        self.assertMembers(field("external_id", "between", ["b", "c~"]), {"bob", "carol"})

    def test_exists_on_text_and_datetime(self) -> None:
        self.assertMembers(field("first_name", "exists", True), {"alice", "carol"})
        self.assertMembers(field("first_name", "exists", False), {"bob", "dave"})
        self.assertMembers(field("last_seen_at", "exists", True), {"alice", "carol", "dave"})
        self.assertMembers(field("last_seen_at", "exists", False), {"bob"})

    def test_datetime_comparisons(self) -> None:
        ten_days = days_ago(10).isoformat()
        self.assertMembers(field("last_seen_at", "gt", days_ago(20).isoformat()), {"alice", "dave"})
        self.assertMembers(field("last_seen_at", "gte", ten_days), {"alice", "dave"})
        self.assertMembers(field("last_seen_at", "lt", ten_days), {"carol"})
        self.assertMembers(field("last_seen_at", "lte", ten_days), {"carol", "dave"})
        self.assertMembers(field("last_seen_at", "eq", ten_days), {"dave"})
        # ne is the complement of eq: a customer never seen is "not seen at that time"
        self.assertMembers(field("last_seen_at", "ne", ten_days), {"alice", "bob", "carol"})
        self.assertMembers(field("last_seen_at", "in", [ten_days, days_ago(1).isoformat()]), {"alice", "dave"})

    def test_between_dates_includes_the_whole_last_day(self) -> None:
        # carol was seen on 2026-10-11, dave on 2026-11-10 at noon
        self.assertMembers(field("last_seen_at", "between", ["2026-10-01", "2026-11-10"]), {"carol", "dave"})
        self.assertMembers(field("last_seen_at", "between", ["2026-10-12", "2026-11-09"]), set())

    def test_boolean_field(self) -> None:
        self.assertMembers(field("is_stub", "eq", True), {"dave"})
        self.assertMembers(field("is_stub", "ne", True), {"alice", "bob", "carol"})


class AttributeTests(RuleSegmentTestCase):
    def test_string_and_number_equality(self) -> None:
        self.assertMembers(field("attributes.tier", "eq", "gold"), {"alice"})
        self.assertMembers(field("attributes.tier", "in", ["gold", "silver"]), {"alice", "bob"})

    def test_two_is_not_the_string_two(self) -> None:
        self.assertMembers(field("attributes.code", "eq", 2), {"bob"})
        self.assertMembers(field("attributes.code", "eq", "2"), {"alice"})
        self.assertMembers(field("attributes.code", "in", [2, 3]), {"bob"})
        # ne / not_in are the complements: missing, null and other types match
        self.assertMembers(field("attributes.code", "ne", 2), {"alice", "carol", "dave"})
        self.assertMembers(field("attributes.tier", "not_in", ["gold"]), {"bob", "carol", "dave"})

    def test_numeric_ordering_ignores_odd_types(self) -> None:
        # carol's age is "old": she matches no numeric comparison, and nothing fails
        self.assertMembers(field("attributes.age", "gt", 10), {"alice"})
        self.assertMembers(field("attributes.age", "gte", 34), {"alice"})
        self.assertMembers(field("attributes.age", "lt", 10), {"bob"})
        self.assertMembers(field("attributes.age", "lte", 34), {"alice", "bob"})
        self.assertMembers(field("attributes.age", "between", [2, 34]), {"alice", "bob"})
        self.assertMembers(field("attributes.age", "between", [2.5, 100]), {"alice"})
        # a string comparison sees only the string
        self.assertMembers(field("attributes.age", "gt", "a"), {"carol"})
        self.assertMembers(field("attributes.tier", "between", ["a", "h"]), {"alice"})

    def test_boolean_attribute(self) -> None:
        self.assertMembers(field("attributes.vip", "eq", True), {"alice"})  # bob's "true" is a string
        self.assertMembers(field("attributes.vip", "eq", False), set())
        self.assertMembers(field("attributes.vip", "eq", "true"), {"bob"})

    def test_contains_substring_or_array_element(self) -> None:
        self.assertMembers(field("attributes.tier", "contains", "OL"), {"alice"})
        # alice's tags are an array holding "a"; bob's are the string "ab-cd"
        self.assertMembers(field("attributes.tags", "contains", "a"), {"alice", "bob"})
        self.assertMembers(field("attributes.tags", "contains", "ab"), {"bob"})
        self.assertMembers(field("attributes.nums", "contains", 2), {"dave"})
        self.assertMembers(field("attributes.nums", "contains", "2"), set())

    def test_exists_is_key_presence(self) -> None:
        self.assertMembers(field("attributes.tier", "exists", True), {"alice", "bob", "carol"})
        self.assertMembers(field("attributes.code", "exists", True), {"alice", "bob", "carol"})  # carol's is null
        self.assertMembers(field("attributes.tier", "exists", False), {"dave"})


class NestingTests(RuleSegmentTestCase):
    def test_all_any_not(self) -> None:
        de = field("country", "eq", "DE")
        self.assertMembers({"all": [de, {"consent": "email"}]}, {"alice"})
        self.assertMembers({"any": [de, field("attributes.tier", "eq", "silver")]}, {"alice", "bob", "carol"})
        self.assertMembers({"not": de}, {"bob", "dave"})
        self.assertMembers(
            {
                "all": [
                    {"not": {"any": [de, field("country", "eq", "FR")]}},
                    {"not": {"not": field("is_stub", "eq", True)}},
                ]
            },
            {"dave"},
        )

    def test_erased_customers_never_match(self) -> None:
        self.assertMembers(field("attributes.tier", "eq", "gold"), {"alice"})
        self.assertMembers({"not": field("country", "eq", "XX")}, {"alice", "bob", "carol", "dave"})
        self.assertMembers({"event": {"kind": "purchase", "within_days": 2}}, set())


class EventTests(RuleSegmentTestCase):
    def test_window_and_has_not_done(self) -> None:
        self.assertMembers({"event": {"kind": "purchase", "within_days": 30}}, {"alice", "bob"})
        self.assertMembers({"event": {"kind": "purchase", "within_days": 10}}, {"alice"})
        self.assertMembers({"not": {"event": {"kind": "purchase", "within_days": 30}}}, {"carol", "dave"})
        self.assertMembers({"event": {"kind": "purchase", "within_days": 30, "count": {"eq": 0}}}, {"carol", "dave"})
        self.assertMembers({"event": {"kind": "purchase", "between": ["2026-10-01", "2026-10-11"]}}, {"alice"})
        self.assertMembers({"event": {"kind": "purchase", "between": ["2026-10-12", "2026-10-31"]}}, {"bob"})

    def test_count_is_distinct_orders_for_purchases(self) -> None:
        self.assertMembers({"event": {"kind": "purchase", "count": {"gte": 2}}}, {"alice"})
        # order o1 has two lines, but it is one order
        self.assertMembers({"event": {"kind": "purchase", "within_days": 30, "count": {"gte": 2}}}, set())
        self.assertMembers({"event": {"kind": "purchase", "count": {"gte": 1, "lt": 2}}}, {"bob"})
        self.assertMembers({"event": {"kind": "open", "count": {"eq": 1}}}, {"alice", "carol"})

    def test_revenue(self) -> None:
        self.assertMembers({"event": {"kind": "purchase", "revenue": {"gte": 100}}}, {"bob"})
        self.assertMembers({"event": {"kind": "purchase", "revenue": {"gte": 30}}}, {"alice", "bob"})
        self.assertMembers({"event": {"kind": "purchase", "within_days": 30, "revenue": {"gte": 30}}}, {"bob"})
        self.assertMembers({"event": {"kind": "purchase", "revenue": {"lt": 0.5}}}, {"carol", "dave"})

    def test_filters(self) -> None:
        self.assertMembers({"event": {"kind": "purchase", "channel": "pos"}}, {"alice"})
        self.assertMembers({"event": {"kind": "purchase", "sku": "B-1"}}, {"alice", "bob"})
        self.assertMembers({"event": {"kind": "purchase", "category": "shoes"}}, {"alice"})
        self.assertMembers({"event": {"kind": "purchase", "category": "hats", "within_days": 10}}, {"alice"})
        self.assertMembers({"event": {"kind": "purchase", "category": "shoes", "revenue": {"gte": 30}}}, {"alice"})
        self.assertMembers({"event": {"kind": "open", "campaign_id": 7}}, {"alice"})


class RfmConsentSegmentTests(RuleSegmentTestCase):
    def test_rfm(self) -> None:
        self.assertMembers({"rfm": {"r_score": {"gte": 4}}}, {"alice"})
        self.assertMembers({"rfm": {"recency_days": {"lte": 30}}}, {"alice", "bob"})
        self.assertMembers({"rfm": {"monetary": {"gte": 50}}}, {"bob"})
        self.assertMembers({"rfm": {"group": "champions"}}, {"alice"})
        self.assertMembers({"rfm": {"group": "need_attention"}}, {"bob"})
        self.assertMembers({"rfm": {"group": "loyal", "m_score": {"gte": 3}}}, set())
        # carol's null scores and dave's missing row never match
        self.assertMembers({"not": {"rfm": {"r_score": {"gte": 4}}}}, {"bob", "carol", "dave"})

    def test_consent(self) -> None:
        self.assertMembers({"consent": "email"}, {"alice"})  # carol unsubscribed, erin erased
        self.assertMembers({"consent": "sms"}, {"bob"})
        self.assertMembers({"consent": "push"}, {"dave"})

    def test_segment_reference_compiles_inline(self) -> None:
        germans = Segment.objects.create(name="germans", definition=field("country", "eq", "DE"))
        mailable = Segment.objects.create(
            name="mailable", definition={"all": [{"segment": germans.pk}, {"consent": "email"}]}
        )
        self.assertMembers({"segment": mailable.pk}, {"alice"})
        self.assertMembers({"not": {"segment": germans.pk}}, {"bob", "dave"})

    def test_a_segment_of_another_kind_is_referenced_by_its_stored_memberships(self) -> None:
        # No tree to inline: its members as of its last rebuild count, whatever its
        # definition would select now (this clustering has no run, so it selects nobody).
        listed = Segment.objects.create(name="listed", kind=Segment.Kind.STATIC, definition={})
        clustering = Clustering.objects.create(name="c")
        clustered = Segment.objects.create(
            name="clustered", kind=Segment.Kind.CLUSTER, definition={"clustering": clustering.pk, "cluster": 0}
        )
        SegmentMembership.objects.bulk_create(
            [
                SegmentMembership(segment=listed, customer=self.bob, since=NOW),
                SegmentMembership(segment=listed, customer=self.dave, since=NOW),
                SegmentMembership(segment=listed, customer=self.erin, since=NOW),
                SegmentMembership(segment=clustered, customer=self.carol, since=NOW),
            ]
        )
        tree = {"any": [{"segment": listed.pk}, {"segment": clustered.pk}]}
        self.assertEqual(validate_definition(tree), [])
        self.assertMembers({"segment": listed.pk}, {"bob", "dave"})  # erin is erased
        self.assertMembers({"segment": clustered.pk}, {"carol"})
        self.assertMembers(tree, {"bob", "carol", "dave"})
        self.assertMembers({"not": {"segment": listed.pk}}, {"alice", "carol"})
        self.assertMembers({"all": [{"segment": listed.pk}, {"consent": "sms"}]}, {"bob"})
        # a rules segment referring to one compiles too
        mixed = Segment.objects.create(
            name="mixed", definition={"all": [{"segment": listed.pk}, field("country", "eq", "US")]}
        )
        self.assertMembers({"segment": mixed.pk}, {"dave"})

    def test_segment_cycles_and_unknown_ids_are_refused(self) -> None:
        a = Segment.objects.create(name="a", definition=field("country", "eq", "DE"))
        b = Segment.objects.create(name="b", definition={"segment": a.pk})
        self.assertEqual(
            validate_definition({"all": [{"segment": b.pk}]}, segment_id=a.pk),
            [RuleError("/all/0/segment", f"segment reference cycle: {a.pk} → {b.pk} → {a.pk}")],
        )
        self.assertEqual(
            validate_definition({"segment": a.pk}, segment_id=a.pk),
            [RuleError("/segment", f"segment reference cycle: {a.pk} → {a.pk}")],
        )
        self.assertEqual(validate_definition({"segment": 999999}), [RuleError("/segment", "unknown segment 999999")])


class BadTreeTests(TestCase):
    def test_every_problem_has_its_pointer(self) -> None:
        tree = {
            "all": [
                field("country", "eq", 3),
                field("nope", "eq", 1),
                field("attributes.age", "in", [1, "1"]),
                {"event": {"within_days": 0}},
                {"bogus": 1},
                {"any": []},
                {"rfm": {"r_score": {"gte": 9}}},
                {"consent": "fax"},
                field("last_seen_at", "gt", "2026-01-01T00:00"),
                field("attributes.age", "between", [5, 1]),
                {"field": "country", "op": "like", "value": "D%"},
                {"not": {"all": "x"}},
            ]
        }
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition(tree)],
            [
                ("/all/0/value", "country is a text field: expected a string"),
                (
                    "/all/1/field",
                    "unknown field 'nope'; expected attributes.<key> or one of: country, created_at, email, "
                    "external_id, first_name, is_stub, last_name, last_seen_at, locale, phone, timezone, updated_at",
                ),
                ("/all/2/value", 'all values must have the same JSON type (2 and "2" differ)'),
                ("/all/3/event/kind", "is required: a touchpoint kind such as purchase"),
                ("/all/3/event/within_days", "must be an integer from 1 to 36500"),
                (
                    "/all/4",
                    "unknown condition 'bogus'; expected one of: all, any, not, field, cluster, consent, event, "
                    "likely_buyers, propensity, rfm, segment, uplift",
                ),
                ("/all/5/any", "must be a non-empty list of conditions"),
                ("/all/6/rfm/r_score/gte", "a score is between 1 and 5"),
                ("/all/7/consent", "must be one of: email, sms, push"),
                ("/all/8/value", "last_seen_at is a date-time: expected ISO 8601 with a UTC offset, or a date"),
                ("/all/9/value", "between needs low <= high"),
                ("/all/10/op", "op must be one of: eq, ne, in, not_in, gt, gte, lt, lte, contains, exists, between"),
                ("/all/11/not/all", "must be a non-empty list of conditions"),
            ],
        )

    def test_root_must_be_a_condition(self) -> None:
        self.assertEqual(validate_definition([]), [RuleError("", "must be an object (a condition)")])
        self.assertEqual(
            validate_definition({"all": [], "any": []}),
            [RuleError("", "must have exactly one key naming the condition, got: all, any")],
        )

    def test_compiling_a_bad_tree_raises_with_the_errors(self) -> None:
        with self.assertRaises(RuleInvalid) as caught:
            segment_customers({"consent": "fax"})
        self.assertEqual(caught.exception.errors, [RuleError("/consent", "must be one of: email, sms, push")])

    def test_json_pointer_escapes_keys(self) -> None:
        self.assertEqual(
            validate_definition({"event": {"kind": "x", "a/b": 1}}), [RuleError("/event/a~1b", "unknown key")]
        )


FOUR_CONDITIONS = {
    "all": [
        field("country", "in", ["DE", "FR"]),
        field("attributes.age", "gte", 2),
        {"event": {"kind": "purchase", "within_days": 30, "revenue": {"gte": 10}}},
        {"not": {"rfm": {"group": "hibernating"}}},
    ]
}


class OneQueryTests(RuleSegmentTestCase):
    def test_a_compiled_segment_is_one_sql_statement(self) -> None:
        germans = Segment.objects.create(name="germans", definition=field("country", "eq", "DE"))
        tree = {"any": [FOUR_CONDITIONS, {"segment": germans.pk}, {"consent": "push"}]}
        customers = segment_customers(tree, now=NOW)  # compiling may read referenced segments
        with CaptureQueriesContext(connection) as queries:
            ids = set(customers.values_list("id", flat=True))
        self.assertEqual(len(queries), 1)
        self.assertEqual(ids, {self.alice.pk, self.bob.pk, self.carol.pk, self.dave.pk})
        self.assertMembers(FOUR_CONDITIONS, {"alice", "bob"})


class PreviewExplainTests(RuleSegmentTestCase):
    def test_preview_counts_and_samples(self) -> None:
        segments_before = list(Segment.objects.values_list("pk", "name", "updated_at"))
        result = segment_preview({"not": field("country", "eq", "US")}, sample_size=2, now=NOW)
        self.assertEqual(
            result,
            {
                "count": 3,
                "sample": [
                    {"id": self.alice.pk, "external_id": "alice", "email": "alice@example.com"},
                    {"id": self.bob.pk, "external_id": "bob", "email": "bob@shop.test"},
                ],
            },
        )
        # nothing saved: only the ready-made RFM segments of migration 0004, untouched
        self.assertEqual(list(Segment.objects.values_list("pk", "name", "updated_at")), segments_before)
        self.assertEqual(len(segments_before), 10)

    def test_preview_refuses_a_bad_tree(self) -> None:
        with self.assertRaises(RuleInvalid) as caught:
            segment_preview({"all": [{"consent": "fax"}]})
        self.assertEqual(caught.exception.errors, [RuleError("/all/0/consent", "must be one of: email, sms, push")])

    TREE = {"all": [field("country", "eq", "DE"), {"not": {"event": {"kind": "purchase", "within_days": 30}}}]}

    def test_explain_a_member(self) -> None:
        self.assertEqual(
            segment_explain(self.TREE, self.carol, now=NOW),
            {
                "customer": {"id": self.carol.pk, "external_id": "carol"},
                "member": True,
                "erased": False,
                "tree": {
                    "node": self.TREE,
                    "path": "",
                    "result": True,
                    "children": [
                        {"node": self.TREE["all"][0], "path": "/all/0", "result": True, "children": [], "actual": "DE"},
                        {
                            "node": self.TREE["all"][1],
                            "path": "/all/1",
                            "result": True,
                            "children": [
                                {
                                    "node": self.TREE["all"][1]["not"],
                                    "path": "/all/1/not",
                                    "result": False,
                                    "children": [],
                                }
                            ],
                        },
                    ],
                },
            },
        )

    def test_explain_a_non_member(self) -> None:
        explained = segment_explain(self.TREE, self.alice, now=NOW)
        self.assertFalse(explained["member"])
        self.assertEqual(
            [(n["path"], n["result"]) for n in explained["tree"]["children"]], [("/all/0", True), ("/all/1", False)]
        )
        self.assertTrue(explained["tree"]["children"][1]["children"][0]["result"])  # she did buy

    def test_explain_expands_a_referenced_rules_segment_and_reads_other_kinds_members(self) -> None:
        germans = Segment.objects.create(name="germans", definition=field("country", "eq", "DE"))
        listed = Segment.objects.create(name="listed", kind=Segment.Kind.STATIC, definition={})
        SegmentMembership.objects.create(segment=listed, customer=self.carol, since=NOW)
        tree = {"all": [{"segment": germans.pk}, {"segment": listed.pk}]}
        explained = segment_explain(tree, self.carol, now=NOW)
        self.assertTrue(explained["member"])
        referenced, static = explained["tree"]["children"]
        self.assertEqual(
            referenced,
            {
                "node": {"segment": germans.pk},
                "path": "/all/0",
                "result": True,
                "segment": {"id": germans.pk, "kind": "rules"},
                "children": [
                    {
                        "node": germans.definition,
                        "path": "/all/0/segment",
                        "result": True,
                        "children": [],
                        "actual": "DE",
                    }
                ],
            },
        )
        self.assertEqual(
            static,
            {
                "node": {"segment": listed.pk},
                "path": "/all/1",
                "result": True,
                "segment": {"id": listed.pk, "kind": "static"},
                "children": [],
            },
        )
        alice = segment_explain(tree, self.alice, now=NOW)  # a German, but not on the list
        self.assertEqual(
            (alice["member"], [child["result"] for child in alice["tree"]["children"]]), (False, [True, False])
        )

    def test_explain_an_erased_customer(self) -> None:
        explained = segment_explain(field("country", "eq", "DE"), self.erin, now=NOW)
        self.assertEqual((explained["member"], explained["erased"]), (False, True))


RFM_SEGMENTS = {
    "RFM: Champions": ("champions", "Bought recently and often (R 5, F 4-5)."),
    "RFM: Loyal": ("loyal", "Buy often; not the most recent (R 3-4, F 4-5)."),
    "RFM: Potential loyalists": ("potential_loyalists", "Recent customers with a few orders (R 4-5, F 2-3)."),
    "RFM: New": ("new", "First order very recently (R 5, F 1)."),
    "RFM: Promising": ("promising", "Recent first-time buyers (R 4, F 1)."),
    "RFM: Need attention": ("need_attention", "Middling recency, few orders (R 3, F 1-3)."),
    "RFM: At risk": ("at_risk", "Used to buy often, not lately (R 1-2, F 3-4)."),
    "RFM: Can't lose": ("cant_lose", "The most frequent buyers, gone quiet (R 1-2, F 5)."),
    "RFM: Hibernating": ("hibernating", "Few orders, long ago (R 2, F 1-2)."),
    "RFM: Lost": ("lost", "Few orders, longest ago (R 1, F 1-2)."),
}


class ReadyMadeRfmSegmentTests(TestCase):
    """Migration 0004's segment per named RFM group. Ten buyers with distinct recencies
    (100, 90, ... 10 days: R scores 1, 1, 2, 2, ... 5, 5) and order counts chosen so each
    lands in its own group; F: the five one-order buyers share rank 1 (F 1), then 2 orders
    rank 6 (F 3), 3 orders rank 7 (F 4), 4 orders rank 8 (F 4), 5 rank 9 (F 5), 6 rank 10 (F 5)."""

    # name: (days since the last order, orders, expected group)
    BUYERS = {
        "b100": (100, 1, "lost"),
        "b090": (90, 6, "cant_lose"),
        "b080": (80, 1, "hibernating"),
        "b070": (70, 3, "at_risk"),
        "b060": (60, 1, "need_attention"),
        "b050": (50, 4, "loyal"),
        "b040": (40, 1, "promising"),
        "b030": (30, 2, "potential_loyalists"),
        "b020": (20, 1, "new"),
        "b010": (10, 5, "champions"),
    }

    def test_the_migration_creates_one_rules_segment_per_group(self) -> None:
        self.assertEqual(
            {s.name: (s.kind, s.definition, s.description) for s in Segment.objects.all()},
            {
                name: (Segment.Kind.RULES, {"rfm": {"group": group}}, description)
                for name, (group, description) in RFM_SEGMENTS.items()
            },
        )

    def test_each_segment_selects_its_group_after_an_rfm_refresh(self) -> None:
        for external_id, (recency, orders, _group) in self.BUYERS.items():
            customer = Customer.objects.create(external_id=external_id)
            for n in range(orders):
                # the last order `recency` days ago, earlier ones a day apart before it
                tp(
                    customer,
                    f"{external_id}-{n}",
                    "purchase",
                    days_ago(recency + n),
                    order_id=f"{external_id}-{n}",
                    sku="A-1",
                    revenue=Decimal(10),
                )
        Customer.objects.create(external_id="browser")  # no purchase: no group
        self.assertEqual(rfm_refresh(NOW.date()), 11)

        members = {}
        for segment in Segment.objects.order_by("name"):
            result = segment_rebuild(segment.pk, now=NOW)
            self.assertEqual((result.entered, result.exited), (result.members, 0), segment.name)
            members[segment.name] = set(
                SegmentMembership.objects.filter(segment=segment).values_list("customer__external_id", flat=True)
            )
        self.assertEqual(
            members,
            {
                name: {external_id for external_id, (*_, expected) in self.BUYERS.items() if expected == group}
                for name, (group, _description) in RFM_SEGMENTS.items()
            },
        )
        self.assertTrue(all(len(found) == 1 for found in members.values()))
