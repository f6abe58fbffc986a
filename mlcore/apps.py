from django.apps import AppConfig


class MlcoreConfig(AppConfig):
    name = "mlcore"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from marketing.registries import register_customer_panel, register_eraser, register_exporter
        from mlcore.customer_panel import customer_panel, customer_scores_erase, customer_scores_export

        register_customer_panel("mlcore.predictions", "Model scores and recommendations", customer_panel)
        register_eraser("mlcore.customer_scores", customer_scores_erase)
        register_exporter("model_scores", customer_scores_export)

        from marketing.registries import DEMO_AFTER_RFM, register_demo_step
        from mlcore.demo import demo_recommendations

        # After the RFM refresh and the segments step (which mines the rules it tops up with).
        register_demo_step("recommendations", demo_recommendations, order=DEMO_AFTER_RFM + 100)
