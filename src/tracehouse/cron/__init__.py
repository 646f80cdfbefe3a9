"""Exactly-once scheduled jobs (see service.py for how)."""

from tracehouse.cron.service import (
    CronGuard,
    CronOutcome,
    CronSpec,
    cron_processor,
    floor_time,
    register_schedules,
    run_cron,
)

__all__ = ["CronGuard", "CronOutcome", "CronSpec", "cron_processor", "floor_time", "register_schedules", "run_cron"]
