"""Beat schedules of the campaigns layer, created once by migration 0003 (see
marketing/schedules.py for why schedules are data, editable in the admin)."""

from __future__ import annotations

SCHEDULES = {
    # name: (task, every seconds). Rebuilds are incremental diffs, so a quarter-hour
    # keeps triggered campaigns fresh without re-reading the touchpoint log constantly.
    "segments-rebuild-all": ("campaigns.tasks.segment_rebuild_all", 15 * 60),
}
