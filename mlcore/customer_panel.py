"""What mlcore knows about one customer, for the customer's admin page and GDPR requests:
their scores under the champion models and their current recommendations. Registered with
marketing's registries (the bottom layer shows and erases them without importing mlcore)."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join

from marketing.models import Customer
from mlcore.models import CustomerScore
from mlcore.recommendations import recommendations_for
from mlcore.scores import customer_scores

PANEL_RECOMMENDATIONS = 5


def _score_text(task: str, entry: dict | None) -> str:
    if entry is None:
        return "no champion model, or not scored yet"
    score = entry["score"]
    value = f"{score * 100:+.2f} pp incremental conversion" if task == "uplift" else f"{score:.1%} chance to convert"
    return f"{value} (model version {entry['model_version']})"


def customer_panel(customer: Customer) -> str:
    scores = customer_scores(customer)
    score_rows = format_html_join("", "<li>{}: {}</li>", ((task, _score_text(task, e)) for task, e in scores.items()))
    try:
        items = recommendations_for([customer.pk], PANEL_RECOMMENDATIONS).get(customer.pk, [])
    except Exception:  # a broken model artifact must not break the customer page
        items = None
    if items is None:
        recommended = format_html("<p>{}</p>", "recommendations are unavailable (see the model versions)")
    elif not items:
        recommended = format_html("<p>{}</p>", "nothing to recommend")
    else:
        recommended = format_html(
            "<ol>{}</ol>",
            format_html_join(
                "", "<li>{} ({}), score {}</li>", ((i["name"], i["sku"], f"{i['score']:.3f}") for i in items)
            ),
        )
    return format_html("<ul>{}</ul><p><b>Recommended next</b></p>{}", score_rows, recommended)


def customer_scores_erase(customer_id: int) -> None:
    """Profiling results are personal data: an erased customer keeps none."""
    CustomerScore.objects.filter(customer_id=customer_id).delete()


def customer_scores_export(customer_id: int) -> list[dict[str, Any]]:
    return [
        {"task": task, "score": score, "model_version": version}
        for task, score, version in CustomerScore.objects.filter(customer_id=customer_id)
        .order_by("model_version_id")
        .values_list("model_version__task", "score", "model_version_id")
    ]
