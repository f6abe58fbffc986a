from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from analytics.demo import demo_funnels
        from marketing.registries import DEMO_AFTER_RFM, register_demo_step

        # After every lower layer's step: the funnels name the demo campaign.
        register_demo_step("funnels", demo_funnels, order=DEMO_AFTER_RFM + 200)
