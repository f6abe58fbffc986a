"""REST API v1 of learning in campaigns: a customer's product recommendations and off-policy
evaluation of a creative policy on a campaign's logged sends. Thin views over
mlcore.recommendations and mlcore.evaluation."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketing.errors import BatchInvalid, NotFound, RowError
from marketing.models import Customer
from marketing.serializers import DetailSerializer, ErrorsSerializer
from mlcore.evaluation import REWARD_MODELS, policy_evaluate
from mlcore.recommendations import DEFAULT_K, MAX_K, recommendations_for

BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Bad parameters, each with its field; nothing was done.")


# --- recommendations -------------------------------------------------------------------------


class RecommendationSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(
        max_digits=14, decimal_places=2, allow_null=True, help_text="In the reporting currency."
    )
    url = serializers.CharField(help_text='The product\'s attributes["url"], or "".')
    score = serializers.FloatField(help_text="The source's own score (cosine sum, rule score, buyers).")
    source = serializers.ChoiceField(
        choices=["cf", "rules", "popular"],
        help_text="cf: item-based collaborative filtering; rules: association-rule next-best-offer; "
        "popular: best sellers (the top-up).",
    )


class CustomerRecommendationsSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    customer_id = serializers.IntegerField()
    k = serializers.IntegerField()
    recommendations = RecommendationSerializer(many=True)


def _k(request: Request) -> int:
    raw = request.query_params.get("k", str(DEFAULT_K))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_K:
        raise BatchInvalid([RowError(row=None, field="k", message=f"must be a whole number from 1 to {MAX_K}")])
    return int(raw)


class CustomerRecommendationsView(APIView):
    @extend_schema(
        summary="A customer's product recommendations",
        description=(
            "Up to `k` products the customer has not bought: item-based collaborative filtering on the purchase "
            "history (the champion recommendations model), topped up by association-rule next-best-offer, then "
            "by best sellers. Only active products. The same lists `{{ recommendations }}` renders in creatives."
        ),
        parameters=[
            OpenApiParameter("external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The CRM's id."),
            OpenApiParameter("k", OpenApiTypes.INT, description=f"How many (1-{MAX_K}, default {DEFAULT_K})."),
        ],
        responses={200: CustomerRecommendationsSerializer, 400: BAD_INPUT, 404: DetailSerializer},
        tags=["customers"],
    )
    def get(self, request: Request, external_id: str) -> Response:
        k = _k(request)
        customer_id = (
            Customer.objects.filter(external_id=external_id, erased_at__isnull=True)
            .values_list("pk", flat=True)
            .first()
        )
        if customer_id is None:
            raise NotFound(f"No customer with external id {external_id!r}.")
        items = recommendations_for([customer_id], k)[customer_id]
        body = {"external_id": external_id, "customer_id": customer_id, "k": k, "recommendations": items}
        return Response(CustomerRecommendationsSerializer(body).data)


# --- policy evaluation -----------------------------------------------------------------------


class PolicyEvaluationRequestSerializer(serializers.Serializer):
    campaign = serializers.IntegerField(min_value=1, help_text="The campaign whose logged sends are evaluated.")
    days = serializers.IntegerField(min_value=1, max_value=365, default=30, help_text="Sends of the last N days.")
    policy = serializers.JSONField(
        help_text='The target creative policy: {"type": "uniform"}, {"type": "fixed", "creative": <id>}, '
        '{"type": "thompson", "prior": [1, 1], "draws": 10000} (the current posterior) or {"type": "greedy"} '
        "(the best observed creative)."
    )
    reward_model = serializers.ChoiceField(
        choices=list(REWARD_MODELS),
        default="auto",
        help_text="For the direct method and doubly robust: the per-creative mean reward (arm_mean), the champion "
        "propensity model (propensity), or the model when there is one (auto).",
    )
    clip = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1.0,
        help_text="Clip importance weights (none by default).",
    )


class IntervalSerializer(serializers.Serializer):
    value = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    std_error = serializers.FloatField()


class EstimateSerializer(IntervalSerializer):
    ess = serializers.FloatField(help_text="Effective sample size of the importance weights.")


class LoggedValueSerializer(IntervalSerializer):
    n = serializers.IntegerField()


class EstimatesSerializer(serializers.Serializer):
    ips = EstimateSerializer()
    snips = EstimateSerializer()
    dm = EstimateSerializer(help_text="Direct method (reward model only).")
    dr = EstimateSerializer(help_text="Doubly robust.")


class ArmSerializer(serializers.Serializer):
    creative = serializers.IntegerField()
    channel_kind = serializers.CharField()
    sends = serializers.IntegerField()
    conversions = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    target_share = serializers.FloatField(help_text="The target policy's average probability of this creative.")


class PolicyEvaluationSerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    days = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(help_text="Sends after this are still inside their outcome window.")
    goal_event = serializers.CharField()
    window_days = serializers.IntegerField()
    policy = serializers.JSONField()
    n = serializers.IntegerField(help_text="Sends evaluated.")
    pending = serializers.IntegerField(help_text="Sends left out: their outcome window is still open.")
    arms = ArmSerializer(many=True)
    logged = LoggedValueSerializer(help_text="What the logged policy earned: the observed conversion rate.")
    reward_model = serializers.CharField()
    estimates = EstimatesSerializer()


class PolicyEvaluationView(APIView):
    @extend_schema(
        summary="Evaluate a creative policy on past sends",
        description=(
            "What would this policy have earned on the campaign's sends of the last `days` days? Off-policy "
            "estimates of its conversion rate per send (IPS, self-normalised IPS, direct method, doubly robust), "
            "each with a 95% confidence interval, beside what the logged policy earned. Only sends whose outcome "
            "window has closed count. 400 when there are no such sends or their logged probabilities are missing."
        ),
        request=PolicyEvaluationRequestSerializer,
        responses={200: PolicyEvaluationSerializer, 400: BAD_INPUT},
        tags=["policy-evaluations"],
    )
    def post(self, request: Request) -> Response:
        body = PolicyEvaluationRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        params = body.validated_data
        result = policy_evaluate(
            params["campaign"],
            params["policy"],
            days=params["days"],
            reward_model=params["reward_model"],
            clip=params["clip"],
        )
        return Response(PolicyEvaluationSerializer(result).data)
