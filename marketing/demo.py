"""Demo data: a believable shop for `seed_demo`, written through the bulk ingest path.

The shop sells the 250 most frequent products of a real online retailer
(`online-retail-baskets.txt`: 28,816 real baskets of stock codes). Its catalogue keeps the
real stock codes as skus; names, categories and prices are invented, but categories are
clusters of the real co-purchase graph, so products bought together tend to share one.
Every demo order is a real basket (restricted to the catalogue; big ones cut to a random
16 of their lines), so association rules mined from demo data are real ones.

Customers fall into five behaviour groups (``attributes.persona``): loyal, bargain
hunters, lapsed, new and browsers. Each group has its own rhythm of visits, carts, orders,
refunds and custom events, its own consent rates, and its own response rate per channel
(``Persona.response``), which the campaigns layer's demo step uses to simulate how
customers answer messages. This module makes no `sent`/`held_out` touchpoints.

Everything is a pure function of (seed, customers, days) apart from absolute times and
dates, which end at `now`: event ids (``demo-<seed>-<n>``) and order ids are the same on every
run, so seeding twice adds nothing. Times are drawn as "days ago" first, so which events
exist never depends on when the command runs.

Higher apps add their demo data with `marketing.registries.register_demo_step`; their
steps run after this population, in order, and receive the `DemoContext`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import re
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from marketing import registries
from marketing.ingest import InsertResult, customers_bulk_upsert, products_bulk_upsert, touchpoints_bulk_insert
from marketing.ingest.last_seen import customers_refresh_last_seen
from marketing.models import Customer
from marketing.rfm import rfm_refresh

DAY = 86_400
BATCH_ROWS = 10_000  # the bulk API's limit; the demo writes through the same service
CATALOGUE_SIZE = 250
SOURCE = "demo"
BASKETS_FILENAME = "online-retail-baskets.txt"
# The catalogue is the shop, not the customers: the same for every --seed.
CATALOGUE_SEED = 20101201
MIN_DAYS = 7

# --- The markets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    country: str
    weight: float
    timezones: tuple[tuple[str, float], ...]
    locale: str
    faker_locale: str
    # E.164 mobile numbers: one of the prefixes, then `digits` random digits.
    phone_prefixes: tuple[str, ...]
    phone_digits: int


MARKETS: tuple[Market, ...] = (
    Market(
        "US",
        0.34,
        (
            ("America/New_York", 0.47),
            ("America/Chicago", 0.29),
            ("America/Denver", 0.07),
            ("America/Los_Angeles", 0.17),
        ),
        "en-US",
        "en_US",
        ("+1212", "+1312", "+1415", "+1617", "+1713", "+1305", "+1206", "+1404", "+1503", "+1720", "+1512", "+1615"),
        7,
    ),
    Market("GB", 0.22, (("Europe/London", 1.0),), "en-GB", "en_GB", ("+4474", "+4475", "+4477", "+4478", "+4479"), 8),
    Market("DE", 0.14, (("Europe/Berlin", 1.0),), "de-DE", "de_DE", ("+49151", "+49160", "+49170", "+49176"), 8),
    Market("FR", 0.12, (("Europe/Paris", 1.0),), "fr-FR", "fr_FR", ("+336", "+337"), 8),
    Market("NL", 0.09, (("Europe/Amsterdam", 1.0),), "nl-NL", "nl_NL", ("+316",), 8),
    Market("ES", 0.09, (("Europe/Madrid", 1.0),), "es-ES", "es_ES", ("+346", "+347"), 8),
)
TIMEZONES: tuple[str, ...] = tuple(tz for market in MARKETS for tz, _ in market.timezones)
PHONE_SHARE = 0.85  # the rest gave no phone number
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved: demo mail reaches nobody

# --- The behaviour groups ---------------------------------------------------------------

CHANNELS = ("email", "sms", "push")


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    orders_per_year: float  # while active (rates are per year of activity); "new" place 0 or 1 order
    min_orders: int
    visits_per_year: float  # browsing sessions that end without a cart
    carts_per_order: float  # abandoned carts for every completed order
    carts_per_year: float  # abandoned carts besides those
    basket_mix: tuple[float, float, float]  # small (1-3 lines), medium (4-8), large (9+)
    sale_share: float  # share of orders placed during sale weeks
    promo_use: float  # chance an order placed in a sale week uses its code
    refund_rate: float  # per order: one line comes back
    wishlist_per_year: float
    trial_rate: float  # started the "plus" membership trial
    unsubscribe_rate: float
    consent: dict[str, float]  # sms: among customers with a phone number
    joined_before: float  # signed up at least this share of --days ago (and up to 3 years before it)
    response: dict[str, float]  # P(goal conversion caused by one message), by channel


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        # Frequent, recent, big baskets; read their email.
        Persona(
            name="loyal", share=0.15, orders_per_year=12.0, min_orders=2, visits_per_year=14,
            carts_per_order=0.8, carts_per_year=2, basket_mix=(0.25, 0.45, 0.30), sale_share=0.15,
            promo_use=0.3, refund_rate=0.03, wishlist_per_year=2.0, trial_rate=0.20, unsubscribe_rate=0.005,
            consent={"email": 0.90, "sms": 0.45, "push": 0.35}, joined_before=0.5,
            response={"email": 0.12, "sms": 0.04, "push": 0.05},
        ),
        # Buy in sale weeks with a code, small baskets; answer SMS and push.
        Persona(
            name="bargain_hunter", share=0.25, orders_per_year=5.0, min_orders=0, visits_per_year=10,
            carts_per_order=1.5, carts_per_year=2, basket_mix=(0.65, 0.35, 0.0), sale_share=0.65,
            promo_use=0.9, refund_rate=0.06, wishlist_per_year=1.5, trial_rate=0.06, unsubscribe_rate=0.015,
            consent={"email": 0.75, "sms": 0.60, "push": 0.35}, joined_before=0.1,
            response={"email": 0.03, "sms": 0.10, "push": 0.09},
        ),
        # Bought a while ago, nothing in the last third of the history; hard to win back.
        Persona(
            name="lapsed", share=0.20, orders_per_year=4.0, min_orders=1, visits_per_year=6,
            carts_per_order=1.0, carts_per_year=1, basket_mix=(0.45, 0.40, 0.15), sale_share=0.20,
            promo_use=0.4, refund_rate=0.04, wishlist_per_year=0.5, trial_rate=0.03, unsubscribe_rate=0.05,
            consent={"email": 0.60, "sms": 0.25, "push": 0.10}, joined_before=0.6,
            response={"email": 0.02, "sms": 0.015, "push": 0.01},
        ),
        # Joined in the last 30 days, 0 or 1 order; curious.
        Persona(
            name="new", share=0.10, orders_per_year=0.0, min_orders=0, visits_per_year=60,
            carts_per_order=1.5, carts_per_year=12, basket_mix=(0.60, 0.40, 0.0), sale_share=0.10,
            promo_use=0.3, refund_rate=0.02, wishlist_per_year=1.0, trial_rate=0.15, unsubscribe_rate=0.01,
            consent={"email": 0.70, "sms": 0.35, "push": 0.25}, joined_before=0.0,
            response={"email": 0.06, "sms": 0.03, "push": 0.04},
        ),
        # Visit a lot, fill carts, rarely buy; notice push.
        Persona(
            name="browser", share=0.30, orders_per_year=0.5, min_orders=0, visits_per_year=48,
            carts_per_order=3.0, carts_per_year=6, basket_mix=(0.70, 0.30, 0.0), sale_share=0.20,
            promo_use=0.5, refund_rate=0.05, wishlist_per_year=4.0, trial_rate=0.05, unsubscribe_rate=0.02,
            consent={"email": 0.62, "sms": 0.35, "push": 0.22}, joined_before=0.1,
            response={"email": 0.015, "sms": 0.01, "push": 0.03},
        ),
    )
}  # fmt: skip
PERSONA_NAMES: tuple[str, ...] = tuple(PERSONAS)
NEW_CUSTOMER_DAYS = 30  # "new" signed up within this many days
NEW_ORDER_RATE = 0.45  # share of new customers who already placed their one order
LOYAL_RECENT_DAYS = 30  # every loyal customer ordered within this many days
SALE_EVERY_DAYS, SALE_LENGTH_DAYS, SALE_DISCOUNTS = 45, 4, (10, 15, 20, 25)

AGE_BANDS = (("18-24", 0.12), ("25-34", 0.24), ("35-44", 0.22), ("45-54", 0.18), ("55-64", 0.14), ("65+", 0.10))
SIGNUP_SOURCES = (
    ("organic", 0.30), ("paid_social", 0.20), ("referral", 0.15), ("in_store", 0.15),
    ("marketplace", 0.10), ("newsletter", 0.10),
)  # fmt: skip
TRAFFIC_SOURCES = ("direct", "organic", "ads", "social", "referral")
LANDINGS = ("home", "category", "product", "search", "sale")
REFUND_REASONS = ("damaged", "wrong_item", "changed_mind", "late_delivery")
# Shoppers' local hour of day (web retail: lunch and evening peaks).
HOUR_WEIGHTS = np.array(
    [
        1.0,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.5,
        3.5,
        4.0,
        4.3,
        4.6,
        5.2,
        5.3,
        4.8,
        4.5,
        4.6,
        5.0,
        5.8,
        6.8,
        7.2,
        6.5,
        4.5,
        2.5,
    ]
)
QUANTITIES, QUANTITY_WEIGHTS = np.array([1, 2, 3, 4, 6]), np.array([0.72, 0.17, 0.06, 0.03, 0.02])

# Touchpoint kinds this module makes, in the order their columns are generated.
KINDS = ("signup", "visit", "add_to_cart", "purchase", "refund", "wishlist_add", "trial_started", "unsubscribe")
K = {kind: code for code, kind in enumerate(KINDS)}
EVENT_CHANNELS = ("web", "app", "email")

# --- The catalogue ----------------------------------------------------------------------

# Categories in order of how much the shop sells of them; the largest co-purchase cluster
# gets the first name. (name, nouns, price range)
CATEGORIES: tuple[tuple[str, tuple[str, ...], tuple[float, float]], ...] = (
    ("Home Decor", ("T-Light Holder", "Wall Clock", "Photo Frame", "Doorstop", "Cushion Cover", "Metal Sign",
                    "Mirror", "Wreath", "Hanging Heart", "Picture Frame", "Coat Hooks"), (3.0, 40.0)),
    ("Kitchen & Dining", ("Cake Stand", "Teacup and Saucer", "Mug", "Tea Towels", "Cake Cases", "Jam Jar Set",
                          "Bowl", "Side Plates", "Lunch Box", "Egg Cups", "Baking Set"), (2.0, 30.0)),
    ("Bags & Storage", ("Jumbo Bag", "Shopper Bag", "Storage Tin", "Lunch Bag", "Charlotte Bag", "Trinket Box",
                        "Wicker Basket", "Drawer Knob", "Storage Jar"), (2.0, 18.0)),
    ("Party & Celebrations", ("Bunting", "Party Bags", "Paper Chain Kit", "Napkins", "Paper Cups", "Balloons",
                              "Birthday Candles", "Party Plates", "Cake Toppers"), (1.5, 12.0)),
    ("Christmas", ("Christmas Decoration", "Advent Calendar", "Gift Wrap", "Hanging Star", "Wooden Ornament",
                   "Christmas Bauble", "Snow Globe", "Stocking"), (2.0, 25.0)),
    ("Stationery & Gifts", ("Notebook", "Greeting Card", "Wrapping Paper", "Pencil Set", "Sticker Sheet",
                            "Gift Tags", "Memo Board", "Recipe Book"), (1.0, 12.0)),
    ("Garden & Outdoor", ("Watering Can", "Plant Pot", "Bird House", "Garden Sign", "Garden Lantern",
                          "Seed Tin", "Picnic Blanket"), (3.0, 35.0)),
    ("Kids & Toys", ("Alarm Clock", "Jigsaw Puzzle", "Skipping Rope", "Colouring Set", "Children's Apron",
                     "Tea Set", "Playhouse", "Money Box"), (2.0, 25.0)),
    ("Lighting & Candles", ("Night Light", "Fairy Lights", "Candle Holder", "Lantern", "Scented Candle",
                            "Tea Lights", "Star Light"), (3.0, 30.0)),
    ("Bath & Wellbeing", ("Hot Water Bottle", "Hand Warmer", "Toiletry Bag", "Soap Dish", "Bath Salts",
                          "Flannel Set", "Wash Bag"), (2.0, 20.0)),
)  # fmt: skip
PATTERNS = (
    "Retrospot", "Regency", "Vintage Paisley", "Pastel Polkadot", "Scandinavian", "Botanical", "Woodland",
    "Spaceboy", "Dolly Girl", "Jam Making", "Strawberry", "Union Jack", "Cream Heart", "Antique Silver",
    "Rustic", "Lovebird", "Vintage Doily", "Folk Art", "Blue Stripe", "Sweetheart", "Hen House", "Ladybird",
    "Owl", "Circus Parade", "Enamel", "Glass Star", "Moroccan", "Wild Rose", "Skull", "Vintage Leaf",
)  # fmt: skip
VARIANT_COLOURS = {
    "A": "Red", "B": "Blue", "C": "Pink", "D": "Green", "E": "Ivory", "F": "Yellow", "G": "Black",
    "H": "Purple", "J": "Orange", "K": "White", "L": "Lilac", "M": "Grey", "N": "Natural", "P": "Pastel",
    "R": "Rose", "S": "Silver", "T": "Teal", "W": "White", "Y": "Gold",
}  # fmt: skip
STOCK_CODE_RE = re.compile(r"^\d{5}[A-Z]{0,2}$")  # real products; drops POST, DOT, gift cards, fees


@dataclass(frozen=True)
class ProductSpec:
    sku: str
    name: str
    category: str
    price_cents: int
    orders: int  # how many real baskets hold it: its popularity

    @property
    def price(self) -> str:
        return f"{self.price_cents // 100}.{self.price_cents % 100:02d}"


@dataclass(frozen=True)
class Catalogue:
    products: tuple[ProductSpec, ...]
    # The real baskets restricted to the catalogue, as product indexes, by size class:
    # (indptr, indices) in CSR form, one pair per class (small, medium, large).
    pools: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def skus(self) -> list[str]:
        return [p.sku for p in self.products]


def baskets_path() -> Path:
    """Where the real baskets are: settings.DEMO_BASKETS_FILE or the environment variable
    of that name, else the gzipped copy shipped in marketing/demo_data/, else the shared
    data folder beside the repository."""
    configured = getattr(settings, "DEMO_BASKETS_FILE", "") or os.environ.get("DEMO_BASKETS_FILE", "")
    base = Path(settings.BASE_DIR)
    candidates = [Path(configured)] if configured else []
    candidates += [
        Path(__file__).resolve().parent / "demo_data" / f"{BASKETS_FILENAME}.gz",
        base.parent / "shared" / "data" / BASKETS_FILENAME,
    ]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"The demo needs the real baskets file {BASKETS_FILENAME}; looked in: {tried}")


def load_baskets(path: Path | None = None) -> list[list[str]]:
    """The real baskets: one list of distinct stock codes per line, file order kept."""
    path = path or baskets_path()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="ascii") as f:
        return [
            list(dict.fromkeys(code for code in line.strip().split(",") if STOCK_CODE_RE.match(code))) for line in f
        ]


@functools.lru_cache(maxsize=4)
def build_catalogue(path: Path | None = None, size: int = CATALOGUE_SIZE) -> Catalogue:
    """The `size` most frequent real products, categorised by co-purchase, and the real
    baskets over them. Deterministic: it depends on the file only."""
    baskets = load_baskets(path)
    counts = Counter(code for basket in baskets for code in basket)
    skus = sorted(counts, key=lambda code: (-counts[code], code))[:size]
    index = {sku: i for i, sku in enumerate(skus)}
    restricted = [[index[c] for c in basket if c in index] for basket in baskets]
    restricted = [b for b in restricted if b]

    category_of = _co_purchase_clusters(restricted, len(skus), len(CATEGORIES))
    rng = np.random.default_rng(CATALOGUE_SEED)
    products = _name_products(skus, counts, category_of, rng)
    return Catalogue(products=products, pools=_basket_pools(restricted, rng))


def _co_purchase_clusters(baskets: list[list[int]], n: int, k: int) -> np.ndarray:
    """Spectral clustering of the co-purchase graph (affinity = log(1 + lift)), k-means
    started from the most popular product and then the farthest points. Plain numpy, so
    no scikit-learn import for a cosmetic feature."""
    indptr = np.cumsum([0] + [len(b) for b in baskets])
    indices = np.fromiter((i for b in baskets for i in b), dtype=np.int64, count=int(indptr[-1]))
    incidence = np.zeros((len(baskets), n), dtype=np.float32)
    incidence[np.repeat(np.arange(len(baskets)), np.diff(indptr)), indices] = 1.0
    co = (incidence.T @ incidence).astype(np.float64)
    freq = np.diag(co).copy()
    np.fill_diagonal(co, 0.0)
    affinity = np.log1p(co * len(baskets) / np.outer(freq, freq))
    degree = affinity.sum(axis=1)
    _, vectors = np.linalg.eigh(affinity / np.sqrt(np.outer(degree, degree)))
    emb = vectors[:, -k:]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    centres = [emb[int(np.argmax(freq))]]
    for _ in range(k - 1):
        dist = np.min([((emb - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(emb[int(np.argmax(dist))])
    centre = np.array(centres)
    for _ in range(100):
        labels = np.argmin(((emb[:, None, :] - centre[None]) ** 2).sum(axis=2), axis=1)
        moved = np.array([emb[labels == j].mean(axis=0) if (labels == j).any() else centre[j] for j in range(k)])
        if np.allclose(moved, centre):
            break
        centre = moved
    # Name clusters by sales: the best-selling cluster is the first category.
    sales = np.bincount(labels, weights=freq, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-sales, kind="stable")] = np.arange(k)
    return rank[labels]


def _name_products(
    skus: list[str], counts: Counter, category_of: np.ndarray, rng: np.random.Generator
) -> tuple[ProductSpec, ...]:
    """Invented names: a pattern and a noun of the category; colour variants of one
    stock code (85099B, 85099F) share the name and price, with their colour added."""
    stems: dict[str, tuple[str, int]] = {}
    used: set[str] = set()
    products = []
    for i, sku in enumerate(skus):
        base, suffix = sku[:5], sku[5:]
        category, nouns, (low, high) = CATEGORIES[int(category_of[i])]
        if base not in stems:
            for _ in range(50):
                stem = f"{PATTERNS[rng.integers(len(PATTERNS))]} {nouns[rng.integers(len(nouns))]}"
                if stem not in used:
                    break
            used.add(stem)
            price = np.exp(rng.uniform(np.log(low), np.log(high)))
            cents = int(price) * 100 + int(rng.choice([49, 95, 99]))
            stems[base] = (stem, cents)
        stem, cents = stems[base]
        name = f"{stem}, {VARIANT_COLOURS.get(suffix[:1], 'Assorted')}" if suffix else stem
        products.append(ProductSpec(sku=sku, name=name, category=category, price_cents=cents, orders=counts[sku]))
    return tuple(products)


LARGE_BASKET_CAP = 16  # the source is a wholesaler's; a shop's big order is smaller


def _basket_pools(baskets: list[list[int]], rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    small, medium, large = [], [], []
    for basket in baskets:
        if len(basket) <= 3:
            small.append(basket)
        elif len(basket) <= 8:
            medium.append(basket)
        else:
            # A random subset of a real basket still holds only real co-purchases.
            keep = np.sort(rng.choice(len(basket), size=min(len(basket), LARGE_BASKET_CAP), replace=False))
            large.append([basket[j] for j in keep])
    pools = []
    for pool in (small, medium, large):
        indptr = np.cumsum([0] + [len(b) for b in pool]).astype(np.int64)
        pools.append((indptr, np.array([i for b in pool for i in b], dtype=np.int64)))
    return tuple(pools)


def product_rows(catalogue: Catalogue) -> list[dict]:
    return [
        {
            "sku": p.sku,
            "name": p.name,
            "category": p.category,
            "price": p.price,
            "attributes": {"demo": True, "source_stock_code": p.sku},
        }
        for p in catalogue.products
    ]


# --- The population ---------------------------------------------------------------------


@dataclass
class Population:
    """Everything the demo makes, column-wise (numpy arrays), before it becomes rows."""

    seed: int
    days: int
    now: datetime
    external_ids: list[str]
    persona: np.ndarray  # index into PERSONA_NAMES
    customers: list[dict]  # bulk API rows
    n_orders: int
    # Touchpoints, one entry per event, in generation order (event n = position + 1).
    kind: np.ndarray
    customer: np.ndarray
    channel: np.ndarray
    at: np.ndarray  # unix seconds (int64)
    order: np.ndarray  # order number or -1
    product: np.ndarray  # catalogue index or -1
    quantity: np.ndarray
    cents: np.ndarray  # revenue in cents or -1
    session: np.ndarray  # session number or -1
    detail: np.ndarray  # a kind-specific code for `properties` (landing, reason, discount...)
    detail2: np.ndarray

    @property
    def size(self) -> int:
        return len(self.kind)

    def kind_counts(self) -> dict[str, int]:
        counts = np.bincount(self.kind, minlength=len(KINDS))
        return {kind: int(counts[code]) for code, kind in enumerate(KINDS)}

    def persona_names(self) -> list[str]:
        return [PERSONA_NAMES[p] for p in self.persona.tolist()]

    def persona_counts(self) -> dict[str, int]:
        counts = np.bincount(self.persona, minlength=len(PERSONA_NAMES))
        return {name: int(counts[i]) for i, name in enumerate(PERSONA_NAMES)}


def persona_quotas(n: int) -> np.ndarray:
    """Exact head counts per persona (largest remainder), so a population of any size has
    the designed shares to within one customer."""
    shares = np.array([PERSONAS[p].share for p in PERSONA_NAMES])
    raw = shares * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def _ascii_slug(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z]", "", plain) or "customer"


class _Clock:
    """Turns "days ago" into UTC instants at a believable local hour of the customer's
    own timezone (DST-correct, by a per-day UTC-offset table)."""

    def __init__(self, now: datetime, span_days: int):
        self.now = int(now.timestamp())
        self.first_day = (now - timedelta(days=span_days + 2)).date()
        n_days = span_days + 4
        days = [self.first_day + timedelta(days=i) for i in range(n_days)]
        self.offsets = np.array(
            [[ZoneInfo(tz).utcoffset(datetime.combine(d, time(12))).total_seconds() for d in days] for tz in TIMEZONES],
            dtype=np.int64,
        )
        self.epoch0 = int(datetime.combine(self.first_day, time(0), tzinfo=UTC).timestamp())
        self.hour_p = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()

    def at(self, rng: np.random.Generator, days_ago: np.ndarray, tz: np.ndarray, lo: int, hi: int) -> np.ndarray:
        raw = self.now - np.round(days_ago * DAY).astype(np.int64)
        day = np.clip((raw - self.epoch0) // DAY, 0, self.offsets.shape[1] - 1)
        offset = self.offsets[tz, day]
        local_midnight = (raw + offset) // DAY * DAY - offset
        seconds = rng.choice(24, size=len(raw), p=self.hour_p) * 3600 + rng.integers(0, 3600, size=len(raw))
        t = local_midnight + seconds
        t = np.where(t > hi, t - DAY, t)
        t = np.where(t < lo, t + DAY, t)
        return np.clip(t, lo, hi)


def _uniform_ago(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo + rng.random(len(lo)) * np.maximum(hi - lo, 0.0)


def _poisson_per_customer(rng: np.random.Generator, rate: np.ndarray, years: np.ndarray) -> np.ndarray:
    # Gamma-Poisson: customers differ in appetite even within a persona.
    appetite = rng.gamma(2.0, 0.5, size=len(rate))
    return rng.poisson(rate * years * appetite)


def generate_population(
    customers: int, days: int, seed: int, now: datetime, catalogue: Catalogue | None = None
) -> Population:
    """The whole demo population as columns. Pure: no database."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if days < MIN_DAYS:
        raise ValueError(f"days must be at least {MIN_DAYS}")
    return _Builder(customers, days, seed, now, catalogue or build_catalogue()).build()


_PERSONA_ARRAYS = (
    "orders_per_year", "min_orders", "visits_per_year", "carts_per_order", "carts_per_year", "basket_mix",
    "sale_share", "promo_use", "refund_rate", "wishlist_per_year", "trial_rate", "unsubscribe_rate", "joined_before",
)  # fmt: skip
_EVENT_COLUMNS = (
    "kind", "customer", "channel", "at", "order", "product", "quantity", "cents", "session", "detail", "detail2",
)  # fmt: skip
WEB, APP, EMAIL = (EVENT_CHANNELS.index(c) for c in ("web", "app", "email"))


class _Builder:
    """Draws the population phase by phase. Customer-level columns are indexed by
    customer number; times are "days ago" until the clock places them, so which events
    exist never depends on `now`. The order of the phases is the order of the random
    draws: changing it changes every seed's population."""

    def __init__(self, customers: int, days: int, seed: int, now: datetime, catalogue: Catalogue):
        self.n, self.days, self.seed, self.now, self.catalogue = customers, days, seed, now, catalogue
        self.rng = np.random.default_rng(seed)
        self.clock = _Clock(now, days + 1)
        self.lo, self.hi = self.clock.now - days * DAY, self.clock.now
        self.p = {name: np.array([getattr(PERSONAS[p], name) for p in PERSONA_NAMES]) for name in _PERSONA_ARRAYS}
        self.cols: dict[str, list[np.ndarray]] = {c: [] for c in _EVENT_COLUMNS}
        self.sessions = 0

    def build(self) -> Population:
        self.draw_customers()
        self.draw_orders()
        self.emit_signups()
        self.emit_orders()
        self.emit_refunds()
        self.emit_abandoned_carts()
        self.emit_browsing()
        self.emit_custom_events()
        self.emit_unsubscribes()
        events = {col: np.concatenate(parts).astype(np.int64) for col, parts in self.cols.items()}
        external_ids = [f"demo-{self.seed}-{i + 1:06d}" for i in range(self.n)]
        return Population(
            seed=self.seed,
            days=self.days,
            now=self.now,
            external_ids=external_ids,
            persona=self.persona,
            customers=self.customer_rows(external_ids, events),
            n_orders=len(self.order_cust),
            **events,
        )

    # --- customers and their orders, in days ago -----------------------------------------

    def draw_customers(self) -> None:
        rng, n, days = self.rng, self.n, self.days
        self.persona = rng.permutation(np.repeat(np.arange(len(PERSONA_NAMES)), persona_quotas(n)))
        self.market = rng.choice(len(MARKETS), size=n, p=_normalised([m.weight for m in MARKETS]))
        self.tz = np.empty(n, dtype=np.int64)
        first_tz = 0
        for mi, m in enumerate(MARKETS):
            here = np.flatnonzero(self.market == mi)
            weights = _normalised([w for _, w in m.timezones])
            self.tz[here] = first_tz + rng.choice(len(m.timezones), size=len(here), p=weights)
            first_tz += len(m.timezones)

        self.is_new = self.persona == PERSONA_NAMES.index("new")
        self.is_loyal = self.persona == PERSONA_NAMES.index("loyal")
        is_lapsed = self.persona == PERSONA_NAMES.index("lapsed")
        new_days = min(NEW_CUSTOMER_DAYS, days)
        # Lapsed: nothing in the last third of the history (at most 120 days).
        self.lapse_gap = float(max(MIN_DAYS, min(120, days // 3)))
        signup_lo = self.p["joined_before"][self.persona] * days
        # Lapsed customers were active a while before they lapsed; nobody else looks new.
        signup_lo = np.maximum(signup_lo, np.where(is_lapsed, self.lapse_gap + 0.25 * (days - self.lapse_gap), 0))
        signup_lo = np.maximum(signup_lo, np.where(self.is_new, 0, new_days))
        signup_hi = days + rng.random(n) * 3 * 365  # many joined before the history starts
        self.signup_ago = np.where(self.is_new, rng.random(n) * new_days, _uniform_ago(rng, signup_lo, signup_hi))
        self.signup_source = rng.choice(len(SIGNUP_SOURCES), size=n, p=_normalised([w for _, w in SIGNUP_SOURCES]))
        # The span each customer was active in: [active_new, active_old] days ago.
        self.active_old = np.minimum(self.signup_ago, days)
        self.active_new = np.where(is_lapsed, self.lapse_gap, 0.0)
        self.active_years = np.maximum(self.active_old - self.active_new, 0.0) / 365.0

        self.has_phone = rng.random(n) < PHONE_SHARE
        self.unsubscribed = rng.random(n) < self.p["unsubscribe_rate"][self.persona]
        self.consent = {}
        for channel in CHANNELS:
            rate = np.array([PERSONAS[p].consent[channel] for p in PERSONA_NAMES])[self.persona]
            self.consent[channel] = (rng.random(n) < rate) & ~self.unsubscribed
        self.consent["sms"] &= self.has_phone
        # Customers who allow push notifications have the app, and use it more.
        self.app_share = np.where(self.consent["push"], 0.6, 0.15)

    def draw_orders(self) -> None:
        rng, days, p, persona = self.rng, self.days, self.p, self.persona
        counts = _poisson_per_customer(rng, p["orders_per_year"][persona], self.active_years)
        counts = np.maximum(counts, p["min_orders"][persona])
        counts = np.where(self.is_new, (rng.random(self.n) < NEW_ORDER_RATE).astype(np.int64), counts)
        self.orders_per_customer = counts
        cust = self.order_cust = np.repeat(np.arange(self.n), counts)
        m = len(cust)
        ago = _uniform_ago(rng, self.active_new[cust], self.active_old[cust])
        sales = np.arange(14, days, SALE_EVERY_DAYS, dtype=np.float64)  # sale-week centres, days ago
        if len(sales):
            want_sale = rng.random(m) < p["sale_share"][persona][cust]
            sale_ago = sales[rng.integers(len(sales), size=m)] + rng.uniform(-0.5, 0.5, m) * SALE_LENGTH_DAYS
            fits = (sale_ago >= self.active_new[cust]) & (sale_ago <= self.active_old[cust])
            ago = np.where(want_sale & fits, sale_ago, ago)
        # Loyal customers ordered recently: their first order moves into the last weeks.
        first = (np.cumsum(counts) - counts)[self.is_loyal & (counts > 0)]
        ago[first] = rng.random(len(first)) * min(LOYAL_RECENT_DAYS, days / 3)
        self.order_ago = ago
        # Any order placed in a sale week may use its code, whatever brought the customer.
        self.sale_no = np.full(m, -1)
        if len(sales):
            nearest = np.abs(ago[:, None] - sales[None, :]).argmin(axis=1)
            self.sale_no = np.where(np.abs(ago - sales[nearest]) <= SALE_LENGTH_DAYS / 2, nearest, -1)
        self.promo = (self.sale_no >= 0) & (rng.random(m) < p["promo_use"][persona][cust])
        discounts = np.array(SALE_DISCOUNTS)[np.maximum(self.sale_no, 0) % len(SALE_DISCOUNTS)]
        self.discount = np.where(self.promo, discounts, 0)
        self.draw_baskets()

    def draw_baskets(self) -> None:
        """Each order is a real basket, from the size class its persona tends to buy."""
        rng, cust = self.rng, self.order_cust
        m = len(cust)
        mix = self.p["basket_mix"][self.persona][cust]
        pool = np.minimum((rng.random(m)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1), 2)
        lines = np.zeros(m, dtype=np.int64)
        orders, products = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for pi, (indptr, indices) in enumerate(self.catalogue.pools):
            mine = np.flatnonzero(pool == pi)
            pick = rng.integers(len(indptr) - 1, size=len(mine))
            lines[mine] = np.diff(indptr)[pick]
            orders.append(np.repeat(mine, lines[mine]))
            products.append(indices[_ranges(indptr[pick], lines[mine])])
        line_order, line_product = np.concatenate(orders), np.concatenate(products)
        by_order = np.argsort(line_order, kind="stable")
        self.order_lines = lines
        self.first_line = np.cumsum(lines) - lines
        self.line_order, self.line_product = line_order[by_order], line_product[by_order]
        self.line_no = np.arange(len(self.line_order)) - np.repeat(self.first_line, lines)
        price = np.array([p.price_cents for p in self.catalogue.products], dtype=np.int64)
        self.qty = rng.choice(QUANTITIES, size=len(self.line_order), p=QUANTITY_WEIGHTS)
        unit = np.round(price[self.line_product] * (100 - self.discount[self.line_order]) / 100).astype(np.int64)
        self.line_cents = unit * self.qty

    # --- events ----------------------------------------------------------------------------

    def place(self, days_ago: np.ndarray, cust: np.ndarray) -> np.ndarray:
        return self.clock.at(self.rng, days_ago, self.tz[cust], self.lo, self.hi)

    def new_sessions(self, m: int) -> np.ndarray:
        first, self.sessions = self.sessions, self.sessions + m
        return np.arange(first, first + m)

    def usual_channel(self, cust: np.ndarray) -> np.ndarray:
        return np.where(self.rng.random(len(cust)) < self.app_share[cust], APP, WEB)

    def emit(self, kind: str, cust: np.ndarray, at: np.ndarray, **columns: np.ndarray) -> None:
        m = len(cust)
        if "channel" not in columns:
            columns["channel"] = self.usual_channel(cust)
        columns.update(kind=np.full(m, K[kind]), customer=cust, at=at)
        for col in _EVENT_COLUMNS:
            self.cols[col].append(columns[col] if col in columns else np.full(m, -1, dtype=np.int64))

    def emit_signups(self) -> None:
        joined = np.flatnonzero(self.signup_ago < self.days)  # inside the history
        self.emit("signup", joined, self.place(self.signup_ago[joined], joined), detail=self.signup_source[joined])

    def emit_orders(self) -> None:
        """A session each: a visit, one add_to_cart per line, then the purchase lines."""
        rng, cust, line = self.rng, self.order_cust, self.line_order
        m, n_lines = len(cust), len(line)
        self.order_at = self.place(self.order_ago, cust)
        channel = self.usual_channel(cust)
        session = self.new_sessions(m)
        lead = 60 * (self.order_lines + 1) + rng.integers(120, 900, size=m)  # visit to checkout, seconds
        landing, traffic = _session_details(rng, m, sale=self.sale_no >= 0)
        self.emit(
            "visit", cust, self.order_at - lead, channel=channel, session=session, detail=landing, detail2=traffic
        )
        cart_at = self.order_at[line] - lead[line] + 60 * (self.line_no + 1) + rng.integers(0, 50, size=n_lines)
        line_cust = cust[line]
        self.emit(
            "add_to_cart",
            line_cust,
            cart_at,
            channel=channel[line],
            session=session[line],
            product=self.line_product,
            quantity=self.qty,
        )
        self.emit(
            "purchase",
            line_cust,
            self.order_at[line],
            channel=channel[line],
            order=line,
            product=self.line_product,
            quantity=self.qty,
            cents=self.line_cents,
            session=session[line],
            detail=self.discount[line],
            detail2=np.where(self.promo, self.sale_no, -1)[line],
        )

    def emit_refunds(self) -> None:
        """One line of some orders comes back days later (decided in days ago, so a
        refund never depends on the time of day the command runs)."""
        rng, cust = self.rng, self.order_cust
        refunded = np.flatnonzero(rng.random(len(cust)) < self.p["refund_rate"][self.persona][cust])
        delay = rng.uniform(2, 30, size=len(refunded))
        happened = self.order_ago[refunded] > delay + 1
        refunded, delay = refunded[happened], delay[happened]
        which = self.first_line[refunded] + (rng.random(len(refunded)) * self.order_lines[refunded]).astype(np.int64)
        self.emit(
            "refund",
            cust[refunded],
            np.minimum(self.order_at[refunded] + np.round(delay * DAY).astype(np.int64), self.hi),
            channel=np.full(len(refunded), WEB),
            order=refunded,
            product=self.line_product[which],
            quantity=self.qty[which],
            cents=self.line_cents[which],
            detail=rng.integers(len(REFUND_REASONS), size=len(refunded)),
        )

    def emit_abandoned_carts(self) -> None:
        """A visit and 1-3 items of a real basket, and no purchase."""
        rng, p, persona = self.rng, self.p, self.persona
        counts = rng.poisson(p["carts_per_order"][persona] * self.orders_per_customer)
        counts += _poisson_per_customer(rng, p["carts_per_year"][persona], self.active_years)
        cust = np.repeat(np.arange(self.n), counts)
        m = len(cust)
        visit_at = self.place(_uniform_ago(rng, self.active_new[cust], self.active_old[cust]), cust)
        session = self.new_sessions(m)
        channel = self.usual_channel(cust)
        landing, traffic = _session_details(rng, m)
        self.emit("visit", cust, visit_at, channel=channel, session=session, detail=landing, detail2=traffic)
        indptr, indices = self.catalogue.pools[1]  # medium baskets: 4-8 real co-purchases to take 1-3 from
        pick = rng.integers(len(indptr) - 1, size=m)
        items = rng.choice([1, 2, 3], size=m, p=[0.55, 0.30, 0.15])
        of = np.repeat(np.arange(m), items)
        item_no = np.arange(int(items.sum())) - np.repeat(np.cumsum(items) - items, items)
        self.emit(
            "add_to_cart",
            cust[of],
            visit_at[of] + 60 * (item_no + 1) + rng.integers(0, 50, size=len(of)),
            channel=channel[of],
            session=session[of],
            product=indices[_ranges(indptr[pick], items)],
            quantity=rng.choice(QUANTITIES, size=len(of), p=QUANTITY_WEIGHTS),
        )

    def emit_browsing(self) -> None:
        """Sessions that are a visit and nothing else."""
        rng = self.rng
        rate = self.p["visits_per_year"][self.persona]
        counts = _poisson_per_customer(rng, rate, self.active_years)
        cust = np.repeat(np.arange(self.n), counts)
        m = len(cust)
        at = self.place(_uniform_ago(rng, self.active_new[cust], self.active_old[cust]), cust)
        landing, traffic = _session_details(rng, m)
        self.emit("visit", cust, at, session=self.new_sessions(m), detail=landing, detail2=traffic)

    def emit_custom_events(self) -> None:
        """Wishlist adds (popular products more often) and "plus" membership trials."""
        rng, p, persona = self.rng, self.p, self.persona
        popularity = _normalised([product.orders for product in self.catalogue.products])
        counts = _poisson_per_customer(rng, p["wishlist_per_year"][persona], np.maximum(self.active_years, 1 / 12))
        cust = np.repeat(np.arange(self.n), counts)
        at = self.place(_uniform_ago(rng, self.active_new[cust], self.active_old[cust]), cust)
        self.emit("wishlist_add", cust, at, product=rng.choice(len(popularity), size=len(cust), p=popularity))
        cust = np.flatnonzero(rng.random(self.n) < p["trial_rate"][persona])
        self.emit(
            "trial_started", cust, self.place(_uniform_ago(rng, self.active_new[cust], self.active_old[cust]), cust)
        )

    def emit_unsubscribes(self) -> None:
        """By the link in an email, some time after joining."""
        cust = np.flatnonzero(self.unsubscribed)
        at = self.place(_uniform_ago(self.rng, np.zeros(len(cust)), self.active_old[cust]), cust)
        self.emit("unsubscribe", cust, at, channel=np.full(len(cust), EMAIL))

    # --- the customer rows -------------------------------------------------------------

    def customer_rows(self, external_ids: list[str], events: dict[str, np.ndarray]) -> list[dict]:
        """Bulk API rows; attributes follow from what the customer did."""
        rng, n = self.rng, self.n
        line_cust = self.order_cust[self.line_order]
        spend = np.bincount(line_cust, weights=self.line_cents, minlength=n) / 100
        tier = _tiers(spend)
        # Preferred category: what they bought, else what they looked at, else a popular one.
        category_index = {c[0]: i for i, c in enumerate(CATEGORIES)}
        product_category = np.array([category_index[p.category] for p in self.catalogue.products])
        interest = np.zeros((n, len(CATEGORIES)))
        np.add.at(interest, (line_cust, product_category[self.line_product]), 1.0)
        looked = (events["product"] >= 0) & (events["kind"] != K["purchase"])
        np.add.at(interest, (events["customer"][looked], product_category[events["product"][looked]]), 0.25)
        popularity = np.bincount(product_category, weights=[p.orders for p in self.catalogue.products])
        fallback = rng.choice(len(CATEGORIES), size=n, p=_normalised(popularity))
        preferred = np.where(interest.max(axis=1) > 0, interest.argmax(axis=1), fallback)
        age = rng.choice(len(AGE_BANDS), size=n, p=_normalised([w for _, w in AGE_BANDS]))
        phones = _phones(rng, self.market, self.has_phone)
        names = _names(self.seed, self.market)
        emails = _emails(rng, names)
        # Only the date: it is an attribute, not a time anything is scheduled by.
        signup_dates = [(self.now - timedelta(days=float(a))).date().isoformat() for a in self.signup_ago]
        consent = {channel: self.consent[channel].tolist() for channel in CHANNELS}
        rows = []
        for i in range(n):
            market = MARKETS[self.market[i]]
            row = {
                "external_id": external_ids[i],
                "email": emails[i],
                "phone": phones[i],
                "first_name": names[i][0],
                "last_name": names[i][1],
                "country": market.country,
                "timezone": TIMEZONES[self.tz[i]],
                "locale": market.locale,
                "attributes": {
                    "persona": PERSONA_NAMES[self.persona[i]],
                    "tier": tier[i],
                    "signup_source": SIGNUP_SOURCES[self.signup_source[i]][0],
                    "signup_date": signup_dates[i],
                    "age_band": AGE_BANDS[age[i]][0],
                    "preferred_category": CATEGORIES[preferred[i]][0],
                    "loyalty_points": int(spend[i]) + (250 if tier[i] in ("gold", "platinum") else 0),
                },
                "email_opt_in": consent["email"][i],
                "sms_opt_in": consent["sms"][i],
                "push_opt_in": consent["push"][i],
            }
            if self.unsubscribed[i]:
                # The bulk API takes a flag (stamped with the time of the write); the
                # `unsubscribe` touchpoint carries when it happened.
                row["unsubscribed"] = True
            rows.append(row)
        return rows


def _normalised(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges [start, start + length): a CSR gather without a Python loop."""
    if not len(lengths):
        return np.zeros(0, dtype=np.int64)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def _session_details(rng: np.random.Generator, m: int, sale: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    landing = rng.choice(len(LANDINGS), size=m, p=[0.35, 0.25, 0.25, 0.10, 0.05])
    if sale is not None:
        landing = np.where(sale & (rng.random(m) < 0.5), LANDINGS.index("sale"), landing)
    traffic = rng.choice(len(TRAFFIC_SOURCES), size=m, p=[0.35, 0.30, 0.15, 0.12, 0.08])
    return landing, traffic


def _tiers(spend: np.ndarray) -> list[str]:
    """Tier by spend among buyers: top 5% platinum, next 15% gold, next 30% silver."""
    tiers = np.full(len(spend), "bronze", dtype=object)
    buyers = spend > 0
    if buyers.any():
        cuts = np.quantile(spend[buyers], [0.5, 0.8, 0.95])
        tiers[buyers & (spend >= cuts[0])] = "silver"
        tiers[buyers & (spend >= cuts[1])] = "gold"
        tiers[buyers & (spend >= cuts[2])] = "platinum"
    return tiers.tolist()


def _phones(rng: np.random.Generator, market: np.ndarray, has_phone: np.ndarray) -> list[str]:
    phones: list[str] = [""] * len(market)
    seen: set[str] = set()
    for i in np.flatnonzero(has_phone):
        m = MARKETS[market[i]]
        while True:  # phone numbers are not unique keys, but two customers sharing one would mislead
            number = m.phone_prefixes[rng.integers(len(m.phone_prefixes))] + "".join(
                map(str, rng.integers(0, 10, size=m.phone_digits))
            )
            if number not in seen:
                break
        seen.add(number)
        phones[i] = number
    return phones


def _names(seed: int, market: np.ndarray) -> list[tuple[str, str]]:
    from faker import Faker  # imported here: only seeding needs it

    fakers = []
    for i, m in enumerate(MARKETS):
        fake = Faker(m.faker_locale)
        fake.seed_instance(seed * 100 + i)
        fakers.append(fake)
    return [(fakers[mi].first_name(), fakers[mi].last_name()) for mi in market.tolist()]


def _emails(rng: np.random.Generator, names: list[tuple[str, str]]) -> list[str]:
    formats = ("{f}.{l}", "{f}{l}", "{i}{l}", "{f}_{l}", "{l}.{f}")
    fmt = rng.integers(len(formats), size=len(names))
    number = np.where(rng.random(len(names)) < 0.5, rng.integers(1, 99, size=len(names)), 0)
    domain = rng.integers(len(EMAIL_DOMAINS), size=len(names))
    seen: set[str] = set()
    emails = []
    for k, (first, last) in enumerate(names):
        f, ln = _ascii_slug(first), _ascii_slug(last)
        local = formats[fmt[k]].format(f=f, l=ln, i=f[0]) + (str(number[k]) if number[k] else "")
        email = f"{local}@{EMAIL_DOMAINS[domain[k]]}"
        if email in seen:
            email = f"{local}.{k + 1}@{EMAIL_DOMAINS[domain[k]]}"
        seen.add(email)
        emails.append(email)
    return emails


def time_order(population: Population) -> np.ndarray:
    """Event positions in time order: the order an integration would have sent them (and
    the physical order a BRIN index on time likes)."""
    return np.lexsort((np.arange(population.size), population.at))


def touchpoint_rows(population: Population, positions: np.ndarray, catalogue: Catalogue) -> list[dict]:
    """Bulk API rows for the events at `positions`."""
    prefix = f"demo-{population.seed}-"
    skus = catalogue.skus
    external_ids = population.external_ids
    currency = settings.REPORTING_CURRENCY
    at = np.datetime_as_string(population.at[positions].astype("datetime64[s]"), unit="s").tolist()
    # Python lists: indexing numpy arrays one scalar at a time costs more than the rest.
    cols = {
        name: getattr(population, name)[positions].tolist()
        for name in ("kind", "customer", "channel", "order", "product", "quantity", "cents", "session")
    }
    details = population.detail[positions].tolist(), population.detail2[positions].tolist()
    rows = []
    for j, pos in enumerate(positions.tolist()):
        kind = KINDS[cols["kind"][j]]
        row: dict[str, Any] = {
            "event_id": f"{prefix}{pos + 1}",
            "customer_external_id": external_ids[cols["customer"][j]],
            "kind": kind,
            "channel": EVENT_CHANNELS[cols["channel"][j]],
            "occurred_at": f"{at[j]}Z",
        }
        product = cols["product"][j]
        if product >= 0:
            row["sku"] = skus[product]
        order = cols["order"][j]
        if order >= 0:
            cents = cols["cents"][j]
            row["order_id"] = f"{prefix}o{order + 1:07d}"
            row["revenue"] = f"{cents // 100}.{cents % 100:02d}"
            row["currency"] = currency
        row["properties"] = _properties(kind, cols["session"][j], cols["quantity"][j], details[0][j], details[1][j])
        rows.append(row)
    return rows


def _properties(kind: str, session: int, quantity: int, detail: int, detail2: int) -> dict:
    if kind == "visit":
        return {"session": session, "landing": LANDINGS[detail], "source": TRAFFIC_SOURCES[detail2]}
    if kind == "add_to_cart":
        return {"session": session, "quantity": quantity}
    if kind == "purchase":
        if detail > 0:
            return {
                "session": session,
                "quantity": quantity,
                "discount_pct": detail,
                "promo_code": f"SALE{detail}-{detail2 + 1:02d}",
            }
        return {"session": session, "quantity": quantity}
    if kind == "refund":
        return {"quantity": quantity, "reason": REFUND_REASONS[detail]}
    if kind == "signup":
        return {"source": SIGNUP_SOURCES[detail][0]}
    if kind == "trial_started":
        return {"plan": "plus", "trial_days": 30}
    if kind == "unsubscribe":
        return {"method": "list_unsubscribe"}
    return {}


# --- Running it -------------------------------------------------------------------------


@dataclass
class DemoContext:
    """What every demo step gets. Marketing's population step fills `customers` and
    `products`; higher apps' steps (registered with `register_demo_step`) read them and
    write their own data, and may add lines to `summary`."""

    seed: int
    now: datetime
    days: int
    rng: np.random.Generator  # marketing's; a step should prefer rng_for(its name)
    stdout: TextIO
    customers: dict[str, str] = field(default_factory=dict)  # external id -> persona, in creation order
    products: dict[str, ProductSpec] = field(default_factory=dict)  # sku -> product
    orders: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    progress: Any = None  # a tqdm bar (disabled when stderr is not a terminal)

    def rng_for(self, name: str) -> np.random.Generator:
        """A generator of its own per step: adding or changing one step never changes the
        data another makes."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def event_id(self, namespace: str, n: int) -> str:
        """A stable touchpoint event id for a step's n-th event: replaying adds nothing."""
        return f"demo-{self.seed}-{namespace}-{n}"

    def persona_of(self, external_id: str) -> str:
        return self.customers[external_id]

    def customers_with_persona(self, persona: str) -> list[str]:
        return [ext for ext, p in self.customers.items() if p == persona]

    def response_rate(self, external_id: str, channel: str) -> float:
        """How likely one message on `channel` makes this customer convert (the true
        effect a campaign's lift should recover)."""
        return PERSONAS[self.customers[external_id]].response.get(channel, 0.0)

    def write_touchpoints(self, rows: Iterable[dict], label: str = "touchpoints") -> InsertResult:
        """Write through the bulk ingest path in batches of at most 10,000 rows."""
        inserted = duplicates = created = 0
        for batch in _batches(list(rows)):
            result = touchpoints_bulk_insert(batch, source=SOURCE)
            inserted, duplicates = inserted + result.inserted, duplicates + result.duplicates
            created += result.customers_created
            self.advance(len(batch), label)
        return InsertResult(inserted=inserted, duplicates=duplicates, customers_created=created)

    def advance(self, rows: int, label: str) -> None:
        if self.progress is not None:
            self.progress.set_description(label, refresh=False)
            if self.progress.total is not None and self.progress.n + rows > self.progress.total:
                self.progress.total = self.progress.n + rows
            self.progress.update(rows)

    def say(self, text: str) -> None:
        bar = self.progress
        if bar is not None and not bar.disable:
            bar.write(text, file=self.stdout)
        else:
            self.stdout.write(text + "\n")


def _batches(rows: list[dict], size: int = BATCH_ROWS) -> Iterable[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def population_exists() -> bool:
    return Customer.objects.exists()


def run_demo(
    customers: int = 5_000,
    days: int = 365,
    seed: int = 42,
    stdout: TextIO | None = None,
    now: datetime | None = None,
    progress: bool | None = None,
) -> DemoContext:
    """Seed the demo: marketing's population, then every registered demo step in order.

    All in one transaction: a run that fails half way leaves nothing, so `--if-empty`
    never mistakes a broken seed for a finished one. `progress=None` shows the bar only
    on a terminal.
    """
    from tqdm import tqdm  # imported here: only seeding needs it

    now = (now or timezone.now()).astimezone(UTC).replace(microsecond=0)
    disable = None if progress is None else not progress  # None: tqdm decides (off when not a TTY)
    with tqdm(unit="rows", unit_scale=True, file=sys.stderr, disable=disable, dynamic_ncols=True) as bar:
        bar.set_description("catalogue")
        catalogue = build_catalogue()
        bar.set_description("generating")
        population = generate_population(customers, days, seed, now, catalogue)
        bar.total = len(catalogue.products) + customers + population.size  # steps may add theirs
        bar.refresh()
        ctx = DemoContext(
            seed=seed,
            now=now,
            days=days,
            rng=np.random.default_rng([seed, zlib.crc32(b"marketing")]),
            stdout=stdout or sys.stdout,
            customers=dict(zip(population.external_ids, population.persona_names(), strict=True)),
            products={p.sku: p for p in catalogue.products},
            orders=population.n_orders,
            progress=bar,
        )
        with transaction.atomic(), _roomy_sqlite_cache():
            _write_population(ctx, population, catalogue)
            steps = registries.demo_steps()
            for step in steps:
                if step.order < registries.DEMO_AFTER_RFM:
                    bar.set_description(step.name)
                    step.run(ctx)
            # What the nightly task would do, done now (after the steps, which may add
            # purchases) so the demo shows RFM scores from the start; the steps that
            # learn from the data (clusters, rules) come after it.
            bar.set_description("rfm")
            rfm_refresh(as_of=now.astimezone(ZoneInfo(settings.REPORTING_TIMEZONE)).date())
            for step in steps:
                if step.order >= registries.DEMO_AFTER_RFM:
                    bar.set_description(step.name)
                    step.run(ctx)
        bar.set_description("done")
    ctx.progress = None
    return ctx


@contextlib.contextmanager
def _roomy_sqlite_cache(kib: int = 256 * 1024):
    """SQLite's default 2 MB page cache makes inserting 400k touchpoints into five
    indexes (in no index's order) spill to disk page by page; 256 MB keeps them in memory.
    Per connection, and put back afterwards."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = -{int(kib)}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(previous)}")


def _write_population(ctx: DemoContext, population: Population, catalogue: Catalogue) -> None:
    products = product_rows(catalogue)
    created = updated = 0
    for batch in _batches(products):
        result = products_bulk_upsert(batch)
        created, updated = created + result.created, updated + result.updated
        ctx.advance(len(batch), "products")
    ctx.summary["products"] = {"rows": len(products), "created": created, "updated": updated}

    created = updated = 0
    for batch in _batches(population.customers):
        result = customers_bulk_upsert(batch, source=SOURCE)
        created, updated = created + result.created, updated + result.updated
        ctx.advance(len(batch), "customers")
    ctx.summary["customers"] = {"rows": len(population.customers), "created": created, "updated": updated}
    ctx.summary["personas"] = population.persona_counts()

    inserted = duplicates = 0
    order = time_order(population)
    for start in range(0, len(order), BATCH_ROWS):
        rows = touchpoint_rows(population, order[start : start + BATCH_ROWS], catalogue)
        result = touchpoints_bulk_insert(rows, source=SOURCE)
        inserted, duplicates = inserted + result.inserted, duplicates + result.duplicates
        ctx.advance(len(rows), "touchpoints")
    ctx.summary["orders"] = population.n_orders
    ctx.summary["touchpoints"] = {"rows": population.size, "inserted": inserted, "duplicates": duplicates}
    ctx.summary["touchpoints_by_kind"] = population.kind_counts()
    # What the beat task would do within a minute; done now so the admin shows "last seen"
    # from the start. It works from a checkpoint, so running it again is harmless.
    customers_refresh_last_seen()


def format_summary(ctx: DemoContext) -> list[str]:
    """The closing lines of `seed_demo`."""
    s = ctx.summary
    lines = []
    if "customers" in s:
        c, p, t = s["customers"], s["products"], s["touchpoints"]
        personas = ", ".join(f"{name} {count:,}" for name, count in s["personas"].items())
        lines += [
            f"Customers: {c['rows']:,} ({c['created']:,} created, {c['updated']:,} updated); {personas}",
            f"Products: {p['rows']:,} in {len({q.category for q in ctx.products.values()})} categories "
            f"({p['created']:,} created, {p['updated']:,} updated)",
            f"Orders: {s['orders']:,}",
            f"Touchpoints: {t['rows']:,} ({t['inserted']:,} inserted, {t['duplicates']:,} duplicates)",
        ]
        lines += [f"  {kind}: {count:,}" for kind, count in s["touchpoints_by_kind"].items()]
    for key, value in s.items():
        if key not in {"customers", "products", "personas", "orders", "touchpoints", "touchpoints_by_kind"}:
            lines.append(f"{key}: {value}")
    return lines


__all__ = [
    "CATEGORIES",
    "KINDS",
    "MARKETS",
    "PERSONAS",
    "Catalogue",
    "DemoContext",
    "Persona",
    "Population",
    "ProductSpec",
    "build_catalogue",
    "format_summary",
    "generate_population",
    "population_exists",
    "product_rows",
    "run_demo",
    "touchpoint_rows",
]
