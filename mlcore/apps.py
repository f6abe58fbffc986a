from django.apps import AppConfig


class MlcoreConfig(AppConfig):
    name = "mlcore"
    default_auto_field = "django.db.models.BigAutoField"
