"""`tracehouse export verify`: reconcile manifested files against ClickHouse.

The contract checked: over the time the manifests cover, every row's current version (newest
`event_ts`, tombstones included) is in exactly one manifested file, no version is in two files, no
id appears twice in one file, every file matches its manifest (size, checksum, row count), and the
manifests' windows follow each other without a gap or an overlap.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.export.formats import read_id_versions
from tracehouse.export.tables import TABLES as EXPORTED_TABLES
from tracehouse.export.windows import ExportWindow, to_ms

MAX_LISTED = 20  # ids listed per problem; counts are always complete


@dataclass
class TableReport:
    table: str
    exported_rows: int = 0
    current_rows: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    project_id: str
    windows: int = 0
    covered: ExportWindow | None = None
    gaps: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)
    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.bad_files or any(t.missing or t.duplicated for t in self.tables.values()))

    def as_json(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "ok": self.ok,
            "windows": self.windows,
            "covered": self.covered.as_json() if self.covered else None,
            "gaps": self.gaps,
            "badFiles": self.bad_files,
            "tables": {
                name: {
                    "exportedRows": t.exported_rows,
                    "currentRows": t.current_rows,
                    "missing": len(t.missing),
                    "missingIds": t.missing[:MAX_LISTED],
                    "duplicated": len(t.duplicated),
                    "duplicatedIds": t.duplicated[:MAX_LISTED],
                }
                for name, t in self.tables.items()
            },
        }


async def load_manifests(
    store: BlobStore, project_id: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    found = []
    for info in await store.list(f"{project_id}/manifests/"):
        manifest = json.loads(await store.get(info.key))
        window = _window(manifest)
        if (start is None or window.end > start) and (end is None or window.start < end):
            found.append(manifest)
    return sorted(found, key=lambda m: _window(m).start)


def _window(manifest: dict[str, Any]) -> ExportWindow:
    w = manifest["window"]
    return ExportWindow(datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"]))


async def verify_export(
    clickhouse: ClickHouse,
    store: BlobStore,
    project_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> VerifyReport:
    report = VerifyReport(project_id)
    found = await load_manifests(store, project_id, start, end)
    report.windows = len(found)
    if not found:
        report.gaps.append("no manifests in the requested range")
        return report
    for before, after in zip(found, found[1:], strict=False):
        if _window(before).end != _window(after).start:
            report.gaps.append(f"{before['window']['end']} .. {after['window']['start']}")
    covered = ExportWindow(_window(found[0]).start, _window(found[-1]).end)
    report.covered = covered
    versions: dict[str, dict[str, set[int]]] = {}
    for manifest in found:
        for entry in manifest["files"]:
            table = report.tables.setdefault(entry["table"], TableReport(entry["table"]))
            ids, stamps = await _read_versions(store, entry, manifest, report)
            table.exported_rows += len(ids)
            seen = versions.setdefault(entry["table"], {})
            for item_id, count in Counter(ids).items():
                if count > 1:
                    table.duplicated.append(item_id)
            for item_id, stamp in zip(ids, stamps, strict=True):
                if stamp in seen.setdefault(item_id, set()):
                    table.duplicated.append(item_id)  # the same version in two files
                seen[item_id].add(stamp)
        for name in manifest["tables"]:
            report.tables.setdefault(name, TableReport(name))
    for name, table in report.tables.items():
        exported_table = EXPORTED_TABLES.get(name)
        if exported_table is None:  # a manifest's table name is data: never put an unknown one into SQL
            report.bad_files.append(f"manifest names table {name!r}, which is not exported")
            continue
        version = exported_table.version_column
        current = await clickhouse.query(
            f"SELECT id, toUnixTimestamp64Milli(max({version})) AS ts FROM {name} "
            "WHERE project_id = {p:String} GROUP BY id HAVING ts >= {a:Int64} AND ts < {b:Int64}",
            {"p": project_id, "a": to_ms(covered.start), "b": to_ms(covered.end)},
            workload=Workload.EXPORT,
        )
        table.current_rows = len(current)
        exported = versions.get(name, {})
        table.missing = sorted(r["id"] for r in current if int(r["ts"]) not in exported.get(r["id"], ()))
    return report


async def _read_versions(
    store: BlobStore, entry: dict[str, Any], manifest: dict[str, Any], report: VerifyReport
) -> tuple[list[str], list[int]]:
    prefix = store.config.key_prefix
    key = entry["key"][len(prefix) :] if entry["key"].startswith(prefix) else entry["key"]
    try:
        data = await store.get(key)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable file is a finding, not a crash
        report.bad_files.append(f"{entry['key']}: cannot read ({type(exc).__name__})")
        return [], []
    if len(data) != entry["sizeBytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        report.bad_files.append(f"{entry['key']}: size or checksum differs from the manifest")
    ids, stamps = read_id_versions(data, manifest["fileType"], bool(manifest["compressed"]))
    if len(ids) != entry["rows"]:
        report.bad_files.append(f"{entry['key']}: {len(ids)} rows, manifest says {entry['rows']}")
    return ids, stamps


__all__ = ["VerifyReport", "verify_export"]
