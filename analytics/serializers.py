"""Serializers of the report API: explicit shapes of the ROI, attribution and report-run
answers (the services return plain dicts; these fix and document their form). Money is
a decimal string in the reporting currency; rates and lifts are numbers (fractions)."""

from __future__ import annotations

from rest_framework import serializers

from analytics.models import ReportRun

MONEY = {"max_digits": 20, "decimal_places": 4, "coerce_to_string": True}


class RunRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ReportRun.Status.choices)
    status_url = serializers.CharField(help_text="GET it for the run's status and, once done, its result.")
    cached = serializers.BooleanField(help_text="True when a fresh earlier run answered (same parameters).")
    computed_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)


class ComparisonSerializer(serializers.Serializer):
    absolute = serializers.FloatField(allow_null=True, help_text="Treated minus control.")
    relative = serializers.FloatField(allow_null=True, help_text="Treated / control - 1.")
    ci_low = serializers.FloatField(allow_null=True, help_text="95% interval of the ABSOLUTE difference.")
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="Two-sided.")
    relative_ci_low = serializers.FloatField(allow_null=True, help_text="95% interval of the relative lift.")
    relative_ci_high = serializers.FloatField(allow_null=True)
    reason = serializers.CharField(allow_blank=True, help_text="Why a figure is null (degenerate data); else empty.")


class LiftSerializer(serializers.Serializer):
    conversion_rate = ComparisonSerializer(
        help_text="Newcombe (Wilson score) interval, pooled two-proportion z test; relative: delta method on log."
    )
    revenue_per_customer = ComparisonSerializer(
        help_text="Welch t (Welch-Satterthwaite df) from counts, sums and sums of squares; relative: delta method."
    )


class GroupSerializer(serializers.Serializer):
    customers = serializers.IntegerField()
    conversions = serializers.IntegerField(help_text="Customers with a goal touchpoint in their window.")
    conversion_rate = serializers.FloatField(allow_null=True)
    orders = serializers.IntegerField(help_text="Distinct orders (or events without an order id) in the windows.")
    revenue = serializers.DecimalField(**MONEY, help_text="Net of refunds of those orders in the window.")
    revenue_per_customer = serializers.DecimalField(**MONEY, allow_null=True)


class BreakdownSerializer(serializers.Serializer):
    label = serializers.CharField()
    sends = serializers.IntegerField()
    customers = serializers.IntegerField(help_text="Treated customers whose first send had this channel/creative.")
    clicks = serializers.IntegerField(help_text="Of those customers, how many clicked.")
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    revenue = serializers.DecimalField(**MONEY)
    cost = serializers.DecimalField(**MONEY, help_text="Messages' cost (the fixed cost is the campaign's only).")
    cpa = serializers.DecimalField(**MONEY, allow_null=True)
    roas = serializers.FloatField(allow_null=True)
    roi = serializers.FloatField(allow_null=True)


class ChannelBreakdownSerializer(BreakdownSerializer):
    channel = serializers.CharField(allow_blank=True, help_text="The touchpoints' channel label (email, sms…).")


class CreativeBreakdownSerializer(BreakdownSerializer):
    creative = serializers.IntegerField(allow_null=True, help_text="The creative's id (null: sends without one).")


class DailySerializer(serializers.Serializer):
    date = serializers.DateField(help_text="A day in the reporting timezone.")
    sends = serializers.IntegerField()
    conversions = serializers.IntegerField(help_text="The treated customers' goal orders/events that day.")
    revenue = serializers.DecimalField(**MONEY, help_text="Their revenue that day, refunds on their own day.")


class CampaignRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class RoiReportSerializer(serializers.Serializer):
    campaign = CampaignRefSerializer()
    goal = serializers.CharField(help_text="The goal touchpoint kind measured.")
    window_days = serializers.IntegerField()
    currency = serializers.CharField()
    timezone = serializers.CharField()
    sends = serializers.IntegerField(help_text="`sent` touchpoints of the campaign.")
    messages_sent = serializers.IntegerField(help_text="Messages with a cost (sent through this installation).")
    opens = serializers.IntegerField(help_text="Treated customers who opened.")
    clicks = serializers.IntegerField(help_text="Treated customers who clicked.")
    conversions = serializers.IntegerField(help_text="Treated customers who converted.")
    orders = serializers.IntegerField()
    revenue = serializers.DecimalField(**MONEY, help_text="The treated group's revenue, net of refunds.")
    messages_cost = serializers.DecimalField(**MONEY)
    fixed_cost = serializers.DecimalField(**MONEY)
    cost = serializers.DecimalField(**MONEY, help_text="messages_cost + fixed_cost.")
    open_rate = serializers.FloatField(allow_null=True)
    ctr = serializers.FloatField(allow_null=True, help_text="Clickers / treated customers.")
    cvr = serializers.FloatField(allow_null=True, help_text="Clickers who converted / clickers.")
    cpa = serializers.DecimalField(**MONEY, allow_null=True, help_text="cost / conversions.")
    roas = serializers.FloatField(allow_null=True, help_text="revenue / cost.")
    roi = serializers.FloatField(allow_null=True, help_text="(revenue - cost) / cost.")
    treated = GroupSerializer()
    control = GroupSerializer()
    lift = LiftSerializer()
    incremental_conversions = serializers.FloatField(allow_null=True, help_text="Treated customers x absolute lift.")
    incremental_revenue = serializers.DecimalField(**MONEY, allow_null=True)
    incremental_roi = serializers.FloatField(allow_null=True, help_text="(incremental revenue - cost) / cost.")
    by_channel = ChannelBreakdownSerializer(many=True)
    by_creative = CreativeBreakdownSerializer(many=True)
    daily = DailySerializer(many=True)
    notes = serializers.ListField(child=serializers.CharField(), help_text="Why figures are missing, if they are.")


class RoiAnswerSerializer(RoiReportSerializer):
    run = RunRefSerializer()


class AttributionTotalSerializer(serializers.Serializer):
    conversions = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True)


class AttributionCreditSerializer(serializers.Serializer):
    label = serializers.CharField()
    conversions = serializers.DecimalField(
        max_digits=20, decimal_places=4, coerce_to_string=True, help_text="Credited conversions (fractions)."
    )
    revenue = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True)


class CampaignCreditSerializer(AttributionCreditSerializer):
    campaign = serializers.IntegerField()


class ChannelCreditSerializer(AttributionCreditSerializer):
    channel = serializers.CharField(allow_blank=True)


class CreativeCreditSerializer(AttributionCreditSerializer):
    creative = serializers.IntegerField(allow_null=True)


class AttributionReportSerializer(serializers.Serializer):
    model = serializers.CharField()
    goal = serializers.CharField()
    date_from = serializers.DateField()
    date_to = serializers.DateField()
    window_days = serializers.IntegerField()
    half_life_days = serializers.FloatField(allow_null=True)
    currency = serializers.CharField()
    timezone = serializers.CharField()
    conversions = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True)
    attributed = AttributionTotalSerializer()
    unattributed = AttributionTotalSerializer(help_text="Conversions with no send or click in their window.")
    by_campaign = CampaignCreditSerializer(many=True, help_text="Sums exactly to attributed.revenue.")
    by_channel = ChannelCreditSerializer(many=True, help_text="Sums exactly to attributed.revenue.")
    by_creative = CreativeCreditSerializer(many=True, help_text="Sums exactly to attributed.revenue.")


class AttributionAnswerSerializer(AttributionReportSerializer):
    run = RunRefSerializer()


class FunnelRequestSerializer(serializers.Serializer):
    funnel = serializers.IntegerField(required=False, min_value=1, help_text="A saved funnel's id.")
    spec = serializers.JSONField(required=False, help_text="An inline funnel spec (see analytics.funnels.spec).")
    refresh = serializers.BooleanField(required=False, default=False, help_text="Skip the cache.")


class FunnelAnswerSerializer(serializers.Serializer):
    run = RunRefSerializer()
    result = serializers.JSONField(help_text="The funnel: steps with counts, conversion, drop-off, times; breakdown.")


class QueuedSerializer(serializers.Serializer):
    run = RunRefSerializer()
    message = serializers.CharField()


class ReportRunSerializer(serializers.ModelSerializer):
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = ReportRun
        fields = [
            "id",
            "kind",
            "status",
            "params",
            "funnel",
            "result",
            "error",
            "created_at",
            "started_at",
            "computed_at",
            "duration_ms",
            "status_url",
        ]

    def get_status_url(self, run: ReportRun) -> str:
        return run_status_url(run.pk)


def run_status_url(run_id: int) -> str:
    return f"/api/v1/reports/runs/{run_id}"
