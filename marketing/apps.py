from django.apps import AppConfig


class MarketingConfig(AppConfig):
    name = "marketing"
    verbose_name = "Customers and touchpoints"
    default_auto_field = "django.db.models.BigAutoField"
