"""A batch-export worker for the SIGKILL test (run as `python batch_export_child.py MODE ...`).

chDB allows one process per data directory, so the rows live in the child's own directory and
everything touching them runs here, one process at a time; the test shares the metadata DB, Redis
and the moto bucket with it.

Modes:
- `load DATA_DIR PROJECT ROWS`: migrate ClickHouse in DATA_DIR and insert ROWS traces with 1 KB
  inputs, written an hour ago.
- `worker SETTINGS_JSON DELAY_S`: an export-role worker (the real queue runner, processors and
  job) over the settings in SETTINGS_JSON. Fault injection: each progress report (every 5,000
  rows) prints `progress N` and then sleeps DELAY_S, so the test can kill it mid-upload.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from export_helpers import write_rows
from tracehouse.batch_export import service
from tracehouse.clickhouse import ClickHouse, migrate_clickhouse
from tracehouse.logging import configure_logging
from tracehouse.runtime import open_services
from tracehouse.settings import WorkerRole, load_settings
from tracehouse.workers import start_workers


async def load(data_dir: str, project: str, rows: int) -> None:
    ch = ClickHouse.from_settings(load_settings(data_dir=Path(data_dir)))
    try:
        await migrate_clickhouse(ch)
        ts = datetime.now(UTC) - timedelta(hours=1)
        for start in range(0, rows, 5_000):
            batch = [
                {"id": f"t{i:06d}", "event_ts": ts, "timestamp": ts, "input": f"{i:06d}" + "x" * 1024}
                for i in range(start, min(rows, start + 5_000))
            ]
            await write_rows(ch, "traces", project, batch)
    finally:
        ch.close()
    print("loaded", flush=True)


async def worker(settings_json: str, delay_s: float) -> None:
    configure_logging("WARNING", "json")
    real = service.record_progress

    def slow_progress(metadata: Any, export_id: str, rows: int, **counted: Any) -> bool:
        changed = real(metadata, export_id, rows, **counted)
        print(f"progress {rows}", flush=True)
        time.sleep(delay_s)  # a slow destination: the kill lands while the upload is open
        return changed

    service.record_progress = slow_progress
    services = await open_services(load_settings(**json.loads(settings_json)))
    runner = await start_workers(services, WorkerRole.EXPORT, crons=[])
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.shutdown(10)
    await services.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "load":
        asyncio.run(load(args[0], args[1], int(args[2])))
    elif mode == "worker":
        asyncio.run(worker(args[0], float(args[1])))
    else:
        raise SystemExit(f"unknown mode {mode}")
