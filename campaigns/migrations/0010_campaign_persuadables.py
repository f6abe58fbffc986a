from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0009_message_fk_no_db_constraint")]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="persuadables_only",
            field=models.BooleanField(
                default=False, help_text="Only customers the uplift model predicts the campaign persuades."
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="min_uplift",
            field=models.FloatField(
                default=0.0,
                help_text="With persuadables only: predicted uplift must be above this (incremental P(goal)).",
            ),
        ),
    ]
