# Claims read due messages in (not_before, id) order straight from the partial index: a
# fixed order among messages due at the same instant (a launch queues them all at once),
# with no sort.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0010_campaign_persuadables")]

    operations = [
        migrations.RemoveIndex(model_name="message", name="message_due"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "queued")), fields=["not_before", "id"], name="message_due"
            ),
        ),
    ]
