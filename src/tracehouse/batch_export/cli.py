"""`tracehouse batch-export ...`: the batch export API from a terminal, with the project's keys.

A client of the public API like any SDK (LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY),
so it works against any tracehouse, local or remote, and needs no database access.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from tracehouse.batch_export.models import FINISHED, BatchExports, BatchExportView, Status

app = typer.Typer(help="User-requested exports to a file (CSV, JSON, JSONL, Parquet).", no_args_is_help=True)

HostOpt = Annotated[str, typer.Option(envvar="LANGFUSE_HOST", help="tracehouse base URL.")]
PublicKeyOpt = Annotated[str, typer.Option(envvar="LANGFUSE_PUBLIC_KEY", help="Project public key.")]
SecretKeyOpt = Annotated[str, typer.Option(envvar="LANGFUSE_SECRET_KEY", help="Project secret key.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
DEFAULT_HOST = "http://127.0.0.1:3000"
POLL_S = 0.5


class _Api:
    def __init__(self, host: str, public_key: str, secret_key: str) -> None:
        if not public_key or not secret_key:
            _fail("set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (or --public-key/--secret-key)")
        self.host = host.rstrip("/")
        self.client = httpx.Client(base_url=self.host, auth=(public_key, secret_key), timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _fail(f"{self.host} is not reachable: {exc}")
        if response.status_code >= 400:
            _fail(f"{response.status_code}: {_message(response)}")
        return response.json()

    def show(self, export_id: str) -> BatchExportView:
        return BatchExportView.model_validate(self.call("GET", f"/api/public/batch-exports/{export_id}"))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if not isinstance(body, dict):
        return str(body)
    message, detail = body.get("message"), body.get("error")
    if message and detail and detail != message:
        return f"{message}: {detail}"
    return str(message or detail or body)


def _fail(message: str) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _print(view: BatchExportView) -> None:
    total = "?" if view.total_rows is None else f"{view.total_rows:,}"
    typer.echo(f"{view.id}  {view.status}  {view.table_name} {view.format}  rows {view.rows_exported:,}/{total}")
    if view.url:
        typer.echo(f"  url (until {view.expires_at}): {view.url}")
    if view.error:
        typer.echo(f"  error: {view.error}")


@app.command()
def create(
    table: Annotated[str, typer.Option(help="traces, observations, scores or sessions.")],
    format: Annotated[str, typer.Option("--format", help="CSV, JSON, JSONL or PARQUET.")] = "PARQUET",
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter", help='The list route\'s parameters as JSON, e.g. \'{"userId": "u1", "tags": ["a"]}\'.'
        ),
    ] = None,
    order_by: Annotated[str | None, typer.Option(help="Traces: <column>.<asc|desc>.")] = None,
    compressed: Annotated[bool, typer.Option(help="gzip (CSV, JSON, JSONL).")] = False,
    email: Annotated[str | None, typer.Option(help="Send the link (or the failure) here.")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the export.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the export to its end with a progress bar.")] = False,
    output: Annotated[Path | None, typer.Option(help="With --wait: download the file here.")] = None,
    host: HostOpt = DEFAULT_HOST,
    public_key: PublicKeyOpt = "",
    secret_key: SecretKeyOpt = "",
) -> None:
    """Queue an export of what the table's list route returns for the filter, as of now."""
    try:
        filters = json.loads(filter_) if filter_ else {}
    except ValueError as exc:
        _fail(f"--filter is not JSON: {exc}")
    body = {"tableName": table, "format": format.upper(), "filter": filters, "compressed": compressed}
    body |= {k: v for k, v in {"orderBy": order_by, "email": email, "name": name}.items() if v is not None}
    api = _Api(host, public_key, secret_key)
    created = api.call("POST", "/api/public/batch-exports", json=body)
    typer.echo(f"queued batch export {created['id']}")
    if not wait:
        return
    view = _follow(api, created["id"])
    _print(view)
    if view.status is not Status.COMPLETED:
        raise typer.Exit(1)
    if output is not None:
        _download(api, view, output)


def _follow(api: _Api, export_id: str) -> BatchExportView:
    """Poll until the export finishes, drawing its rows against the total once counted."""
    view = api.show(export_id)
    with typer.progressbar(length=max(view.total_rows or 1, 1), label="rows exported") as bar:
        shown = 0
        while True:
            if view.total_rows is not None and bar.length != max(view.total_rows, 1):
                bar.length = max(view.total_rows, 1)
            bar.update(view.rows_exported - shown)
            shown = view.rows_exported
            if view.status in FINISHED:
                return view
            time.sleep(POLL_S)
            view = api.show(export_id)


@app.command("list")
def list_(
    page: int = 1,
    limit: int = 50,
    json_: JsonOpt = False,
    host: HostOpt = DEFAULT_HOST,
    public_key: PublicKeyOpt = "",
    secret_key: SecretKeyOpt = "",
) -> None:
    """The project's exports, newest first."""
    api = _Api(host, public_key, secret_key)
    answer = BatchExports.model_validate(
        api.call("GET", "/api/public/batch-exports", params={"page": page, "limit": limit})
    )
    if json_:
        typer.echo(answer.model_dump_json(by_alias=True, indent=2))
        return
    for view in answer.data:
        _print(view)
    typer.echo(f"page {answer.meta.page} of {answer.meta.total_pages} ({answer.meta.total_items} exports)")


@app.command()
def show(
    export_id: str,
    json_: JsonOpt = False,
    host: HostOpt = DEFAULT_HOST,
    public_key: PublicKeyOpt = "",
    secret_key: SecretKeyOpt = "",
) -> None:
    """Status, rows so far and the total, the link and its expiry, or the error."""
    view = _Api(host, public_key, secret_key).show(export_id)
    if json_:
        typer.echo(view.model_dump_json(by_alias=True, indent=2))
    else:
        _print(view)


@app.command()
def cancel(
    export_id: str, host: HostOpt = DEFAULT_HOST, public_key: PublicKeyOpt = "", secret_key: SecretKeyOpt = ""
) -> None:
    """Stop a queued or running export; a running one leaves no file."""
    api = _Api(host, public_key, secret_key)
    _print(BatchExportView.model_validate(api.call("POST", f"/api/public/batch-exports/{export_id}/cancel")))


@app.command()
def download(
    export_id: str,
    output: Annotated[Path | None, typer.Option(help="Where to write the file [default: its name, here].")] = None,
    host: HostOpt = DEFAULT_HOST,
    public_key: PublicKeyOpt = "",
    secret_key: SecretKeyOpt = "",
) -> None:
    """Download a completed export's file through its signed link, with a progress bar."""
    api = _Api(host, public_key, secret_key)
    view = api.show(export_id)
    if view.status is not Status.COMPLETED or not view.url:
        _fail(f"batch export {export_id} is {view.status}: it has no file to download")
    _download(api, view, output)


def _download(api: _Api, view: BatchExportView, output: Path | None) -> None:
    """Stream the link to `output.part`, then rename: a broken download never looks complete."""
    assert view.url is not None
    with httpx.Client(timeout=60) as client, client.stream("GET", view.url) as response:
        if response.status_code != 200:
            response.read()
            _fail(f"download failed, {response.status_code}: {_message(response)}")
        target = output or Path(_filename(response, view))
        partial = target.with_name(target.name + ".part")
        length = int(response.headers.get("Content-Length") or view.size_bytes or 0)
        with partial.open("wb") as out, typer.progressbar(length=max(length, 1), label="downloading") as bar:
            for chunk in response.iter_bytes():
                out.write(chunk)
                bar.update(len(chunk))
        partial.replace(target)
    typer.echo(f"wrote {target} ({target.stat().st_size:,} bytes)")


def _filename(response: httpx.Response, view: BatchExportView) -> str:
    disposition = response.headers.get("Content-Disposition", "")
    if "filename*=UTF-8''" in disposition:
        from urllib.parse import unquote

        return Path(unquote(disposition.split("filename*=UTF-8''", 1)[1])).name
    path = httpx.URL(view.url or "").path
    return Path(path).name or f"{view.id}.{view.format.extension(view.compressed)}"
