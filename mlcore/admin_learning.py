"""The admin's "Policy evaluation" page: a form (days, target creative policy, reward model)
and the off-policy estimates of what that policy would have earned on a campaign's logged
sends (mlcore.evaluation). A thin view: the campaigns admin serves it under the campaign
(campaigns.admin.CampaignAdmin, its "Policy evaluation" link), since the campaign and its
creatives belong to that layer; it passes them in."""

from __future__ import annotations

from collections.abc import Sequence

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from marketing.errors import BatchInvalid
from mlcore.evaluation import MAX_DAYS, REWARD_MODELS, policy_evaluate

TEMPLATE = "admin/mlcore/policy_evaluation.html"
POLICY_CHOICES = [
    ("uniform", "Uniform over the creatives"),
    ("fixed", "Always one creative"),
    ("thompson", "Thompson sampling (the current posterior)"),
    ("greedy", "Greedy: the best observed creative"),
]
ESTIMATE_LABELS = [
    ("ips", "IPS (inverse propensity scoring)"),
    ("snips", "Self-normalised IPS"),
    ("dm", "Direct method (reward model)"),
    ("dr", "Doubly robust"),
]


class PolicyEvaluationForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=MAX_DAYS, initial=30, help_text="Sends of the last N days.")
    policy = forms.ChoiceField(choices=POLICY_CHOICES, initial="uniform", label="Target policy")
    creative = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, help_text="For “Always one creative”."
    )
    reward_model = forms.ChoiceField(
        choices=[(name, name) for name in REWARD_MODELS],
        initial="auto",
        help_text="For the direct method and doubly robust: auto uses the champion propensity model when there "
        "is one, else the per-creative mean.",
    )

    def __init__(self, *args, creatives: Sequence[tuple[int, str]] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["creative"].choices = [("", "—"), *[(str(pk), label) for pk, label in creatives]]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("policy") == "fixed" and not data.get("creative"):
            self.add_error("creative", "Choose the creative to evaluate.")
        return data

    def target_policy(self) -> dict:
        data = self.cleaned_data
        if data["policy"] == "fixed":
            return {"type": "fixed", "creative": data["creative"]}
        return {"type": data["policy"]}


def interval_chart(rows: Sequence[dict], width: int = 640, row_height: int = 26) -> SafeString:
    """An inline SVG forest plot: one row per {"label", "value", "ci_low", "ci_high"}, the
    interval as a line and the estimate as a dot, on a shared conversion-rate axis (no
    JavaScript, no external file: the admin works offline)."""
    if not rows:
        return SafeString("")
    label_width, pad = 230, 12
    low = min(0.0, *(row["ci_low"] for row in rows))
    high = max(*(row["ci_high"] for row in rows), low + 1e-9)
    span = high - low

    def x(value: float) -> float:
        return label_width + pad + (value - low) / span * (width - label_width - 2 * pad)

    height = row_height * len(rows) + 24
    parts = []
    for i, row in enumerate(rows):
        y = row_height * i + row_height / 2
        parts.append(
            format_html(
                '<g class="interval"><text x="0" y="{}" dominant-baseline="middle" font-size="12">{}</text>'
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#417690" stroke-width="2"/>'
                '<circle cx="{}" cy="{}" r="4" fill="#205067"><title>{}: {} ({} to {})</title></circle></g>',
                f"{y:.1f}",
                row["label"],
                f"{x(row['ci_low']):.1f}",
                f"{x(row['ci_high']):.1f}",
                f"{y:.1f}",
                f"{y:.1f}",
                f"{x(row['value']):.1f}",
                f"{y:.1f}",
                row["label"],
                f"{row['value']:.4f}",
                f"{row['ci_low']:.4f}",
                f"{row['ci_high']:.4f}",
            )
        )
    axis_y = row_height * len(rows) + 4
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>',
        ((f"{x(v):.1f}", axis_y + 14, f"{v:.3f}") for v in (low, low + span / 2, high)),
    )
    return format_html(
        '<svg class="policy-evaluation-chart" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" '
        'role="img" aria-label="Estimated conversion rate per send with 95% intervals">{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#999"/>{}</svg>',
        width,
        height,
        SafeString("".join(parts)),
        f"{x(low):.1f}",
        f"{x(high):.1f}",
        axis_y,
        axis_y,
        ticks,
    )


def policy_evaluation_page(
    request: HttpRequest,
    *,
    campaign_id: int,
    creatives: Sequence[tuple[int, str]],
    context: dict,
) -> HttpResponse:
    """GET without `evaluate`: the empty form; with it: the form and the estimates (or the
    reasons there are none). `context`: the admin's base context (site, opts, title…)."""
    submitted = "evaluate" in request.GET
    form = PolicyEvaluationForm(request.GET if submitted else None, creatives=creatives)
    result, errors, chart = None, [], SafeString("")
    if submitted and form.is_valid():
        try:
            result = policy_evaluate(
                campaign_id,
                form.target_policy(),
                days=form.cleaned_data["days"],
                reward_model=form.cleaned_data["reward_model"],
            )
        except BatchInvalid as exc:
            errors = [f"{error.field}: {error.message}" if error.field else error.message for error in exc.errors]
    rows = []
    if result is not None:
        rows = [{"key": key, "label": label, **result["estimates"][key]} for key, label in ESTIMATE_LABELS]
        chart = interval_chart([{"label": "Logged policy (observed)", **result["logged"]}, *rows])
        names = dict(creatives)
        for arm in result["arms"]:
            arm["name"] = names.get(arm["creative"], f"creative {arm['creative']}")
    return TemplateResponse(
        request,
        TEMPLATE,
        {
            **context,
            "form": form,
            "result": result,
            "estimate_rows": rows,
            "chart": chart,
            "evaluation_errors": errors,
        },
    )
