"""Scheduled export: windows, files, manifests, cursor, splitting, faults — against real parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from export_helpers import (
    DAY,
    HOUR,
    MINUTE,
    Clock,
    current_state,
    exported_rows,
    job,
    make_integration,
    manifests,
    reduce_latest,
    run_until_idle,
    write_rows,
)

from tracehouse.export import state
from tracehouse.export.crypto import SecretBox
from tracehouse.export.destination import destination_store


def store_of(services: Any, project_id: str):
    integration = state.load_integration(services.metadata, SecretBox(None), project_id)
    return destination_store(integration, services.settings.data_dir)


async def test_full_history_exports_every_row_once_in_latest_version(services: Any, project: Any) -> None:
    project_id, _ = project
    base = datetime.now(UTC).replace(microsecond=0) - 3 * DAY
    await write_rows(services.clickhouse, "traces", project_id,
                     [{"id": f"t{i}", "event_ts": base + i * 10 * MINUTE, "name": "v1"} for i in range(30)])
    await write_rows(services.clickhouse, "observations", project_id,
                     [{"id": f"o{i}", "event_ts": base + i * 7 * MINUTE} for i in range(40)])
    make_integration(services.metadata, project_id)
    clock = Clock(datetime.now(UTC))
    results = await run_until_idle(job(services, clock), project_id)
    assert any(r.get("rows") for r in results)
    store = store_of(services, project_id)
    exported = await exported_rows(store, project_id)
    assert set(reduce_latest(exported["traces"])) == set(await current_state(services.clickhouse, "traces", project_id))
    assert len(exported["traces"]) == 30 and len(exported["observations"]) == 40
