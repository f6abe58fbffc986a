from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import campaigns.delivery.holdout  # registers holdout_bucket() on SQLite connections
        import campaigns.segments.ml  # registers the cluster and likely_buyers leaves
        import campaigns.segments.scores  # noqa: F401  (registers the propensity and uplift leaves)
        from campaigns.delivery.control import delivery_erase
        from campaigns.demo import demo_campaigns, demo_segments
        from campaigns.segments.rebuild import segment_memberships_erase
        from marketing.registries import DEMO_AFTER_RFM, register_demo_step, register_eraser

        register_eraser("campaigns.segment_memberships", segment_memberships_erase)
        register_eraser("campaigns.delivery", delivery_erase)
        register_demo_step("segments", demo_segments, order=DEMO_AFTER_RFM)
        # Before the RFM refresh: the campaign's orders count in the customers' RFM scores.
        register_demo_step("campaigns", demo_campaigns, order=DEMO_AFTER_RFM // 2)

        from campaigns.delivery.bandit_policies import register_bandit_policies

        register_bandit_policies()  # Thompson sampling and propensity policies (issue 5)
