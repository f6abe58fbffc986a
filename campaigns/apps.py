from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from campaigns.segments.rebuild import segment_memberships_erase
        from marketing.registries import register_eraser

        register_eraser("campaigns.segment_memberships", segment_memberships_erase)
