"""The campaigns layer's demo data (a `seed_demo` step after the RFM refresh): the segments
a marketer opens first. The ten ready-made RFM segments (migration 0004) are rebuilt; a
clustering "Customer value" runs and makes one segment per cluster; association rules are
mined from the demo orders (real Online Retail baskets) and the consequent of the
strongest rule gets a "Likely buyers of …" affinity segment."""

from __future__ import annotations

from campaigns.models import Segment
from campaigns.segments.clusterings import clustering_refresh
from campaigns.segments.rebuild import segment_rebuild
from campaigns.segments.services import segment_create
from mlcore.affinity import rules_mine
from mlcore.models import AssociationRule, Clustering

DEMO_CLUSTERING = "Customer value"
DEMO_RULES = {"min_support": 0.01, "min_confidence": 0.2, "min_lift": 1.0}


def demo_segments(ctx) -> None:
    rfm_segments = list(Segment.objects.filter(name__startswith="RFM: ").order_by("pk").values_list("pk", flat=True))
    for segment_id in rfm_segments:
        segment_rebuild(segment_id, now=ctx.now)

    clustering, _ = Clustering.objects.get_or_create(
        name=DEMO_CLUSTERING,
        defaults={"description": "RFM, tenure and email engagement; k chosen by silhouette."},
    )
    clusters = clustering_refresh(clustering.pk, now=ctx.now)

    # A demo of a few hundred orders would find "frequent" itemsets in single baskets: ask
    # for at least 5 baskets.
    min_support = max(DEMO_RULES["min_support"], 5 / max(ctx.orders, 1))
    version = rules_mine(now=ctx.now, **{**DEMO_RULES, "min_support": min_support})
    top = AssociationRule.objects.filter(model_version=version).order_by("rank").first()
    affinity = None
    if top is not None:
        sku = top.consequents[0]
        product = ctx.products.get(sku)
        name = f"Likely buyers of {product.name if product else sku}"
        affinity = Segment.objects.filter(name=name).first() or segment_create(
            name=name,
            kind=Segment.Kind.AFFINITY,
            definition={"sku": sku, "min_confidence": DEMO_RULES["min_confidence"]},
            description=f"Bought what usually comes with {sku}, never {sku} itself.",
        )
        segment_rebuild(affinity.pk, now=ctx.now)

    ctx.summary["segments (RFM, cluster, affinity)"] = (
        f"{len(rfm_segments)}, {len(clusters['segments'])}, {0 if affinity is None else 1}"
    )
    ctx.summary["association rules"] = version.metrics["rules_stored"]
