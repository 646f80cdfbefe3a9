"""`tracehouse engine`: the embedded ClickHouse server process (a typer command for cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracehouse.engine.admission import DEFAULT_MAX_WAIT_MS
from tracehouse.errors import TracehouseError


def engine(
    data_dir: Annotated[
        Path,
        typer.Option(
            help="tracehouse data directory; chDB's data is <data-dir>/clickhouse [env: TRACEHOUSE_DATA_DIR].",
            envvar="TRACEHOUSE_DATA_DIR",
        ),
    ] = Path(".tracehouse"),
    host: Annotated[str, typer.Option(help="Interface to bind (keep it loopback unless a firewall is in front).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="HTTP port (ClickHouse's is 8123; 0 picks a free one).")] = 8123,
    users_file: Annotated[
        Path | None,
        typer.Option(help="ClickHouse users file (users, profiles, quotas); default: user 'default', no password."),
    ] = None,
    max_concurrent_queries: Annotated[int, typer.Option(help="Queries running at once; more wait up to 10 s.")] = 64,
    background_wait_ms: Annotated[
        int,
        typer.Option(
            help="Admission: a background query (priority > 1, the ingestion and export profiles) waits up to "
            "this long while interactive queries run or wait; 0 turns it off "
            f"[env: TRACEHOUSE_ENGINE_BACKGROUND_WAIT_MS; default {DEFAULT_MAX_WAIT_MS}].",
            envvar="TRACEHOUSE_ENGINE_BACKGROUND_WAIT_MS",
            min=0,
        ),
    ] = DEFAULT_MAX_WAIT_MS,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", envvar="TRACEHOUSE_LOG_LEVEL")
    ] = "info",
) -> None:
    """Serve embedded ClickHouse (chDB) over ClickHouse's HTTP interface, so web and workers can be
    separate processes on one data directory (CLICKHOUSE_URL=http://127.0.0.1:PORT)."""
    from tracehouse.engine.server import EngineOptions, run_engine
    from tracehouse.logging import configure_logging

    configure_logging(log_level, "json")
    options = EngineOptions(
        data_dir=data_dir,
        host=host,
        port=port,
        users_file=users_file,
        max_concurrent_queries=max_concurrent_queries,
        background_wait_ms=background_wait_ms,
    )
    try:
        run_engine(options)
    except TracehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(engine)
