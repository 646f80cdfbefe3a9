"""`tracehouse doctor`: what this process would connect to, and what the servers actually apply.

It checks each dependency, shows the role and the queues this configuration consumes, and runs one
probe query in each workload class, printing the settings ClickHouse reports for that query (so a
settings profile that overrides ours, or a user shared by two classes, shows up here rather than in
an incident).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracehouse.clickhouse import Workload
from tracehouse.runtime import Services

# Settings whose applied value decides how one workload affects the others.
PROBED_SETTINGS = ("max_memory_usage", "max_threads", "priority", "os_thread_priority", "max_execution_time")


@dataclass
class ClassProbe:
    workload: str
    target: str
    user: str | None = None
    applied: dict[str, str] = field(default_factory=dict)
    sent: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class DoctorReport:
    dependencies: dict[str, str]
    role: str
    queues: list[str]
    classes: list[ClassProbe]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.dependencies.values()) and not any(c.error for c in self.classes)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dependencies": self.dependencies,
            "role": self.role,
            "queues": self.queues,
            "classes": [vars(c) for c in self.classes],
            "warnings": self.warnings,
        }


async def probe_class(services: Services, workload: Workload) -> ClassProbe:
    probe = ClassProbe(workload.value, services.clickhouse.backend(workload).target)
    probe.sent = services.clickhouse.settings_for(workload)
    columns = ", ".join(f"toString(getSetting('{name}')) AS {name}" for name in PROBED_SETTINGS)
    try:
        [row] = await services.clickhouse.query(f"SELECT currentUser() AS user, {columns}", workload=workload)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the doctor reports every class
        probe.error = str(exc).splitlines()[0][:300]
        return probe
    probe.user = str(row.pop("user"))
    probe.applied = {k: str(v) for k, v in row.items()}
    return probe


def _warnings(classes: list[ClassProbe]) -> list[str]:
    warnings = []
    by_class = {c.workload: c for c in classes}
    interactive, export = by_class[Workload.INTERACTIVE.value], by_class[Workload.EXPORT.value]
    if export.user is not None and (export.user, export.target) == (interactive.user, interactive.target):
        warnings.append(
            f"exports run as the interactive user {export.user!r} on {export.target}: give them their own user "
            "(and ideally a replica) with CLICKHOUSE_EXPORT_URL, so an export's memory and threads are limited "
            "by its own profile"
        )
    for probe in classes:
        for name, sent in probe.sent.items():
            applied = probe.applied.get(name)
            if name in PROBED_SETTINGS and applied is not None and str(sent) != applied:
                warnings.append(f"{probe.workload}: {name} sent {sent}, the server applied {applied} (a profile wins)")
    return warnings


async def diagnose(services: Services, role: str, queues: list[str]) -> DoctorReport:
    dependencies = await services.check()
    classes = [await probe_class(services, workload) for workload in Workload]
    return DoctorReport(dependencies, role, queues, classes, _warnings(classes))
