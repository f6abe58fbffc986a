"""A campaign's life: launch, pause, resume, cancel, progress and completion.

    draft --launch--> scheduled (one-off with a future send_at) --send_at passes--> running
    draft --launch--> running (one-off now: its "launch" run; recurring and triggered:
                               runs fire from campaigns.delivery.triggers)
    running --pause--> paused --resume--> running
    scheduled | running | paused --cancel--> cancelled (queued messages cancelled)
    running --all messages final (one-off)--> completed (campaigns_mark_completed)

Pause is a status: senders claim only messages of running campaigns, so a pause stops new
claims at once, and resume sends what is still queued — nothing is re-made or re-sent.
Each transition takes the campaign's row lock, so it never crosses a launch in flight.
Invalid transitions raise Conflict; a campaign that cannot run raises BatchInvalid with
one RowError per problem, naming the field (`campaign_definition_errors`).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Exists, Max, OuterRef
from django.utils import timezone

from campaigns.delivery.launch import LAUNCH_KEY, policy_context, run_launch, send_after_launch
from campaigns.delivery.persuadables import persuadables_errors
from campaigns.delivery.policies import CHANNEL, CREATIVE, policies_for, policy_errors
from campaigns.delivery.triggers import cron_errors
from campaigns.models import Campaign, CampaignRun, Device, Message, SegmentChange
from marketing.errors import BatchInvalid, Conflict, NotFound, RowError
from marketing.models import SLUG_RE, SYSTEM_KINDS, Touchpoint

logger = logging.getLogger(__name__)

Status = Campaign.Status
Trigger = Campaign.Trigger
# Messages that may still be sent; every other status is final.
PENDING = (Message.Status.QUEUED, Message.Status.SENDING)
RUNS_SHOWN = 100


# --- definition ------------------------------------------------------------------------------


def campaign_definition_errors(campaign: Campaign, *, for_launch: bool = True) -> list[RowError]:
    """Every problem that keeps `campaign` from running, one RowError per problem, naming
    the field. With for_launch=False (a draft being saved) only what is set is checked —
    a cron that does not parse, a malformed policy — not what is still missing."""
    errors: list[RowError] = []

    def add(field: str, message: str) -> None:
        errors.append(RowError(row=None, field=field, message=message))

    trigger = campaign.trigger
    if trigger not in Trigger.values:
        add("trigger", f"must be one of {', '.join(Trigger.values)}")
    needs_audience = for_launch and trigger in (Trigger.ONE_OFF, Trigger.RECURRING)
    if needs_audience and not (campaign.pk and campaign.audience.exists()):
        add("audience", "choose at least one audience segment")
    if trigger == Trigger.RECURRING and not campaign.cron.strip():
        if for_launch:
            add("cron", 'a recurring campaign needs a cron expression, e.g. "0 9 * * 1" (Mondays 09:00 UTC)')
    elif campaign.cron.strip():
        errors.extend(RowError(row=None, field="cron", message=message) for message in cron_errors(campaign.cron))
    if trigger == Trigger.SEGMENT_ENTRY and campaign.trigger_segment_id is None and for_launch:
        add("trigger_segment", "a segment-entry campaign needs the segment whose entries trigger it")
    kind = campaign.trigger_event_kind
    if trigger == Trigger.EVENT and not kind and for_launch:
        add("trigger_event_kind", "an event campaign needs the touchpoint kind that triggers it")
    elif kind:
        if not re.match(SLUG_RE, kind):
            add("trigger_event_kind", "must be a touchpoint kind: a lower-case slug such as purchase")
        elif kind in SYSTEM_KINDS:
            add("trigger_event_kind", f"{kind} touchpoints are written by campaigns themselves and cannot trigger one")
    if campaign.holdout_percent is None or not 0 <= campaign.holdout_percent <= 100:
        add("holdout_percent", "must be between 0 and 100")
    if campaign.frequency_cap is not None and campaign.frequency_cap_days < 1:
        add("frequency_cap_days", "must be at least 1")
    if campaign.budget is not None and campaign.budget < 0:
        add("budget", "must be 0 or more")
    if campaign.fixed_cost is not None and campaign.fixed_cost < 0:
        add("fixed_cost", "must be 0 or more")
    if (campaign.quiet_hours_start is None) != (campaign.quiet_hours_end is None):
        add("quiet_hours_start", "quiet hours need both a start and an end")
    errors.extend(persuadables_errors(campaign, for_launch=for_launch))

    if for_launch and campaign.pk:
        _, problems = policies_for(campaign.channel_policy, campaign.creative_policy, policy_context(campaign))
        for field, messages in problems.by_field.items():
            errors.extend(RowError(row=None, field=field, message=message) for message in messages)
    else:
        for field, kind_name in (("channel_policy", CHANNEL), ("creative_policy", CREATIVE)):
            value = getattr(campaign, field)
            errors.extend(
                RowError(row=None, field=field, message=message) for message in policy_errors(value, kind_name)
            )
    return errors


def _locked(campaign_id: int) -> Campaign:
    campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound(f"Campaign {campaign_id} does not exist.")
    return campaign


def _refuse(campaign: Campaign, action: str, allowed: str) -> Conflict:
    return Conflict(f"Campaign {campaign.pk} is {campaign.status}: only {allowed} campaign can be {action}.")


# --- transitions -----------------------------------------------------------------------------


def campaign_launch(campaign_id: int, *, now: datetime | None = None) -> CampaignRun | None:
    """Launch a draft. A one-off goes `running` with its "launch" run made now (returned),
    or `scheduled` when its send_at is in the future (None: triggers launches it when
    due). A recurring or triggered campaign goes `running` (None): its runs fire from
    triggers; a triggered one reacts to entries and touchpoints from now on (its
    checkpoint starts at the current end of the log). Conflict when not a draft,
    BatchInvalid listing every definition problem."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = _locked(campaign_id)
        if campaign.status != Status.DRAFT:
            hint = {
                Status.PAUSED: " (resume it instead)",
                Status.SCHEDULED: " (it launches at its send_at; cancel it to stop that)",
            }.get(campaign.status, "")
            raise Conflict(f"Campaign {campaign.pk} is {campaign.status}: only a draft can be launched{hint}.")
        errors = campaign_definition_errors(campaign)
        if errors:
            raise BatchInvalid(errors)
        if campaign.trigger == Trigger.ONE_OFF:
            if campaign.send_at is not None and campaign.send_at > now:
                _set(campaign, status=Status.SCHEDULED, updated_at=now)
                return None
            return one_off_start(campaign, now)
        if campaign.trigger == Trigger.SEGMENT_ENTRY:
            checkpoint = SegmentChange.objects.filter(segment_id=campaign.trigger_segment_id).aggregate(last=Max("id"))
            campaign.trigger_checkpoint = checkpoint["last"] or 0
        elif campaign.trigger == Trigger.EVENT:
            campaign.trigger_checkpoint = Touchpoint.objects.aggregate(last=Max("id"))["last"] or 0
        _set(
            campaign,
            status=Status.RUNNING,
            launched_at=now,
            updated_at=now,
            trigger_checkpoint=campaign.trigger_checkpoint,
        )
        return None


def one_off_start(campaign: Campaign, now: datetime) -> CampaignRun:
    """Make a one-off (locked by the caller) `running` and launch its run, in the caller's
    transaction: if the launch fails, the status does not change."""
    _set(campaign, status=Status.RUNNING, launched_at=now, updated_at=now)
    return run_launch(campaign.pk, LAUNCH_KEY, now=now)


def _set(campaign: Campaign, **fields) -> None:
    for name, value in fields.items():
        setattr(campaign, name, value)
    campaign.save(update_fields=list(fields))


def campaign_pause(campaign_id: int) -> Campaign:
    """Stop sending: senders claim no new message of a paused campaign (one already
    handed to a provider finishes). Triggers do not fire while paused."""
    with transaction.atomic():
        campaign = _locked(campaign_id)
        if campaign.status != Status.RUNNING:
            raise _refuse(campaign, "paused", "a running")
        _set(campaign, status=Status.PAUSED, updated_at=timezone.now())
    return campaign


def campaign_resume(campaign_id: int) -> Campaign:
    """Go on sending what is still queued (nothing is re-made); triggers fire again,
    from where they stopped."""
    with transaction.atomic():
        campaign = _locked(campaign_id)
        if campaign.status != Status.PAUSED:
            raise _refuse(campaign, "resumed", "a paused")
        _set(campaign, status=Status.RUNNING, updated_at=timezone.now())
        channel_ids = sorted(
            Message.objects.filter(campaign_id=campaign.pk, status=Message.Status.QUEUED)
            .exclude(channel_id=None)
            .values_list("channel_id", flat=True)
            .distinct()
        )
        if channel_ids:
            transaction.on_commit(lambda: send_after_launch(channel_ids), robust=True)
    return campaign


def campaign_cancel(campaign_id: int) -> Campaign:
    """Stop for good: queued messages become `cancelled` (one UPDATE), open runs are
    cancelled. A message already `sending` finishes; sent ones stay sent."""
    now = timezone.now()
    with transaction.atomic():
        campaign = _locked(campaign_id)
        if campaign.status not in (Status.SCHEDULED, Status.RUNNING, Status.PAUSED):
            allowed = "a scheduled, running or paused"
            if campaign.status == Status.DRAFT:
                raise Conflict(f"Campaign {campaign.pk} is a draft: it never launched (delete it instead).")
            raise _refuse(campaign, "cancelled", allowed)
        Message.objects.filter(campaign_id=campaign.pk, status=Message.Status.QUEUED).update(
            status=Message.Status.CANCELLED, claimed_by="", lease_until=None, updated_at=now
        )
        CampaignRun.objects.filter(campaign=campaign, status=CampaignRun.Status.RUNNING).update(
            status=CampaignRun.Status.CANCELLED, finished_at=now
        )
        _set(campaign, status=Status.CANCELLED, finished_at=now, updated_at=now)
    return campaign


def campaigns_mark_completed(now: datetime | None = None) -> int:
    """Close what is done: runs without pending (queued or sending) messages become
    `completed`, and so do running one-off campaigns whose launch run is done. Returns how
    many campaigns were completed. Called by the sweeper; cheap when nothing is done."""
    now = now or timezone.now()
    pending = Message.objects.filter(campaign_id=OuterRef("campaign_id"), run_id=OuterRef("pk"), status__in=PENDING)
    CampaignRun.objects.filter(status=CampaignRun.Status.RUNNING, campaign__status=Status.RUNNING).filter(
        ~Exists(pending)
    ).update(status=CampaignRun.Status.COMPLETED, finished_at=now)
    campaign_pending = Message.objects.filter(campaign_id=OuterRef("pk"), status__in=PENDING)
    launched = CampaignRun.objects.filter(campaign_id=OuterRef("pk"), key=LAUNCH_KEY)
    return (
        Campaign.objects.filter(status=Status.RUNNING, trigger=Trigger.ONE_OFF)
        .filter(Exists(launched), ~Exists(campaign_pending))
        .update(status=Status.COMPLETED, finished_at=now, updated_at=now)
    )


# --- progress --------------------------------------------------------------------------------


def campaign_progress(campaign_id: int) -> dict:
    """Message counts by status (every status, zeros included) for the whole campaign,
    plus `total`, `campaign_status`, `suppressed_reasons` ({reason: n}) and `runs`: the
    latest RUNS_SHOWN runs, newest first, each {"id", "key", "status", "started_at",
    "finished_at", "counts" (what the launch recorded), "messages" ({status: n})};
    `runs_total` counts them all."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound(f"Campaign {campaign_id} does not exist.")
    statuses = Message.Status.values
    by_run: dict[int, dict[str, int]] = {}
    totals = dict.fromkeys(statuses, 0)
    rows = Message.objects.filter(campaign_id=campaign.pk).values("run_id", "status").annotate(n=Count("id")).order_by()
    for row in rows:
        totals[row["status"]] += row["n"]
        by_run.setdefault(row["run_id"], dict.fromkeys(statuses, 0))[row["status"]] += row["n"]
    reasons = dict(
        Message.objects.filter(campaign_id=campaign.pk, status=Message.Status.SUPPRESSED)
        .values("error")
        .annotate(n=Count("id"))
        .order_by("error")
        .values_list("error", "n")
    )
    runs = CampaignRun.objects.filter(campaign=campaign).order_by("-started_at", "-pk")
    return {
        **totals,
        "total": sum(totals.values()),
        "campaign_status": campaign.status,
        "suppressed_reasons": reasons,
        "runs_total": runs.count(),
        "runs": [
            {
                "id": run.pk,
                "key": run.key,
                "status": run.status,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "counts": run.counts,
                "messages": by_run.get(run.pk, dict.fromkeys(statuses, 0)),
            }
            for run in runs[:RUNS_SHOWN]
        ],
    }


# --- GDPR erase ------------------------------------------------------------------------------


def delivery_erase(customer_id: int) -> None:
    """GDPR erase hook (registered in CampaignsConfig.ready): the customer's push devices
    are deleted, and their messages keep no address, no policy features and no provider
    error text (which may quote the address); launch drop reasons are kept."""
    Device.objects.filter(customer_id=customer_id).delete()
    Message.objects.filter(customer_id=customer_id).exclude(recipient="", features={}).update(recipient="", features={})
    Message.objects.filter(customer_id=customer_id).exclude(status=Message.Status.SUPPRESSED).exclude(error="").update(
        error=""
    )
