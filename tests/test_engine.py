"""The embedded engine as a real subprocess: tracehouse's own HTTP backend, clickhouse-connect, curl-style
requests, users and profiles from deploy/clickhouse-users.xml, cancellation, concurrency and shutdown."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import psutil
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from conftest import free_port

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from tracehouse.clickhouse import ClickHouse, ClickHouseError, ClickHouseErrorKind, Workload, migrate_clickhouse
from tracehouse.clickhouse.migrations import load_migrations
from tracehouse.settings import load_settings

USERS_FILE = Path(__file__).resolve().parents[1] / "deploy" / "clickhouse-users.xml"
CORES = os.cpu_count() or 1
PASSWORDS = {
    "tracehouse_interactive": "interactive-secret",
    "tracehouse_ingestion": "ingestion-secret",
    "tracehouse_export": "export-secret",
}
ENV = {
    "TRACEHOUSE_CH_INTERACTIVE_PASSWORD": PASSWORDS["tracehouse_interactive"],
    "TRACEHOUSE_CH_INGESTION_PASSWORD": PASSWORDS["tracehouse_ingestion"],
    "TRACEHOUSE_CH_EXPORT_PASSWORD": PASSWORDS["tracehouse_export"],
}


class Engine:
    def __init__(
        self, data_dir: Path, port: int, users_file: Path | None = USERS_FILE, prefix: tuple[str, ...] = ()
    ) -> None:
        self.data_dir, self.port = data_dir, port
        args = [*prefix, sys.executable, "-m", "tracehouse.engine", "--data-dir", str(data_dir), "--port", str(port)]
        if users_file is not None:
            args += ["--users-file", str(users_file)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV}
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the engine prints exactly one line when it listens
        if not line:
            raise AssertionError(f"engine did not start: {self.stop()}")
        return line.strip()

    def stop(self, timeout: float = 15) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError("engine did not stop on SIGTERM") from None
        return err

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    server = Engine(tmp_path_factory.mktemp("engine"), free_port())
    assert server.wait_ready() == f"engine listening on http://127.0.0.1:{server.port}"
    yield server
    server.stop()


def tracehouse_client(
    engine: Engine, tmp_path: Path, user: str = "default", export_user: str | None = None
) -> ClickHouse:
    def url(name: str) -> str:
        return f"http://{name}:{PASSWORDS.get(name, '')}@127.0.0.1:{engine.port}"

    settings = load_settings(
        data_dir=tmp_path,
        clickhouse_url=url(user),
        clickhouse_export_url=url(export_user) if export_user else None,
    )
    return ClickHouse.from_settings(settings)


def query_log(engine: Engine, **filters: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{engine.url}/engine/query_log", params=filters, timeout=10)
    response.raise_for_status()
    import json

    return [json.loads(line) for line in response.text.splitlines()]


# --------------------------------------------------------------------------------------------
# tracehouse's own client over HTTP
# --------------------------------------------------------------------------------------------
async def test_migrations_run_through_the_engine_and_are_idempotent(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path)
    try:
        applied = await migrate_clickhouse(ch)
        assert applied == [f"{m.version:04d}_{m.name}" for m in load_migrations()]
        assert await migrate_clickhouse(ch) == []
        tables = await ch.query(
            "SELECT name FROM system.tables WHERE database = 'default'", workload=Workload.INTERACTIVE
        )
        assert {"traces", "observations", "scores"} <= {row["name"] for row in tables}
    finally:
        ch.close()


async def test_insert_query_command_and_stream_through_tracehouse_client(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path)
    try:
        await ch.command(
            "CREATE TABLE IF NOT EXISTS rt (id String, n UInt64, m Map(String, String), ts DateTime64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY id",
            workload=Workload.INGESTION,
        )
        data = pa.table(
            {
                "id": [f"id-{i:05d}" for i in range(5000)],
                "n": pa.array(range(5000), pa.uint64()),
                "m": pa.array([[("k", str(i))] for i in range(5000)], pa.map_(pa.string(), pa.string())),
                "ts": pa.array([1_700_000_000_000 + i for i in range(5000)], pa.timestamp("ms")),
            }
        )
        assert await ch.insert_arrow("rt", data, workload=Workload.INGESTION) == 5000
        rows = await ch.query("SELECT count() AS c, sum(n) AS s FROM rt", workload=Workload.INTERACTIVE)
        assert rows == [{"c": 5000, "s": sum(range(5000))}]
        table = await ch.query_arrow("SELECT id, m FROM rt ORDER BY id LIMIT 3", workload=Workload.INTERACTIVE)
        assert table.column("id").to_pylist() == ["id-00000", "id-00001", "id-00002"]
        assert table.column("m").to_pylist()[1] == [("k", "1")]
        batches = [
            b async for b in ch.stream_arrow("SELECT id FROM rt ORDER BY id", workload=Workload.EXPORT, batch_rows=1000)
        ]
        assert sum(b.num_rows for b in batches) == 5000
        assert batches[0].column(0)[0].as_py() == "id-00000"
    finally:
        ch.close()


TRICKY = {
    "s": "tab\there, newline\nthen backslash \\ and quotes ' \" and ünïcødé ✓",
    "empty": "",
    "arr": ["a\tb", "c'd", "e\\f", "g\nh"],
    "tup": (7, "x\ty"),
    "n": 18446744073709551615,
}


async def test_parameters_with_tricky_values_round_trip(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path)
    try:
        rows = await ch.query(
            "SELECT {s:String} AS s, {empty:String} AS empty, {arr:Array(String)} AS arr, "
            "{tup:Tuple(UInt8, String)} AS tup, {n:UInt64} AS n",
            TRICKY,
            workload=Workload.INTERACTIVE,
        )
        row = rows[0]
        assert (row["s"], row["empty"], row["arr"], row["n"]) == (TRICKY["s"], "", TRICKY["arr"], TRICKY["n"])
        assert tuple(row["tup"].values()) == TRICKY["tup"]
    finally:
        ch.close()


async def test_parameters_too_long_for_a_url_arrive_as_form_fields(engine: Engine, tmp_path: Path) -> None:
    """clickhouse-connect sends the query and its parameters as multipart/form-data once they would make
    the URL too long (the ingestion writer's verification does, with thousands of keys)."""
    ch = tracehouse_client(engine, tmp_path)
    keys = [("p", f"id-{i}-{'x' * 40}", TRICKY["s"]) for i in range(3000)]
    try:
        rows = await ch.query(
            "SELECT length({keys:Array(Tuple(String, String, String))}) AS n, "
            "{keys:Array(Tuple(String, String, String))}[3000].3 AS last, {s:String} AS s",
            {"keys": keys, "s": TRICKY["s"]},
            workload=Workload.INGESTION,
        )
    finally:
        ch.close()
    assert rows == [{"n": 3000, "last": TRICKY["s"], "s": TRICKY["s"]}]


@pytest.mark.parametrize("compress", [True, False, "gzip", "zstd", "lz4"])
def test_clickhouse_connect_with_and_without_compression(engine: Engine, compress: Any) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=engine.port, compress=compress, autogenerate_session_id=False
    )
    try:
        client.command(
            "CREATE TABLE IF NOT EXISTS cc (k String, v UInt32, lc LowCardinality(String)) "
            "ENGINE = MergeTree ORDER BY k"
        )
        client.command("TRUNCATE TABLE cc")
        client.insert("cc", [[f"k{i}", i, "x" if i % 2 else "y"] for i in range(20_000)], column_names=["k", "v", "lc"])
        assert client.query("SELECT count(), sum(v) FROM cc").result_rows == [(20_000, sum(range(20_000)))]
        assert client.query("SELECT lc, count() FROM cc GROUP BY lc ORDER BY lc").result_rows == [
            ("x", 10_000),
            ("y", 10_000),
        ]
        with client.query_row_block_stream("SELECT number FROM numbers(300000)") as stream:
            assert sum(len(block) for block in stream) == 300_000
    finally:
        client.close()


def test_response_and_request_bodies_are_compressed_as_negotiated(engine: Engine) -> None:
    params = {"query": "SELECT number FROM numbers(100000) FORMAT TSV", "enable_http_compression": "1"}
    with httpx.Client(timeout=30) as http:
        # ClickHouse's preference order, not the client's: zstd before gzip.
        plain = http.post(engine.url, params=params, headers={"Accept-Encoding": "gzip, zstd"})
        assert plain.headers["content-encoding"] == "zstd"
        assert zstd.decompress(plain.content).splitlines()[-1] == b"99999"
        off = http.post(engine.url, params={"query": params["query"]}, headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in off.headers  # enable_http_compression not set
        body = gzip.compress(b"SELECT 'sent gzipped' FORMAT TSV")
        sent = http.post(engine.url, content=body, headers={"Content-Encoding": "gzip"})
        assert sent.text == "sent gzipped\n"


# --------------------------------------------------------------------------------------------
# errors in ClickHouse's shape
# --------------------------------------------------------------------------------------------
async def test_errors_keep_clickhouse_codes_and_tracehouse_classification(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path)
    try:
        with pytest.raises(ClickHouseError) as memory:
            await ch.query(
                "SELECT uniqExact(number) FROM numbers(5000000) SETTINGS max_memory_usage = 1000000",
                workload=Workload.INTERACTIVE,
            )
        assert memory.value.kind is ClickHouseErrorKind.MEMORY_LIMIT
        with pytest.raises(ClickHouseError) as timeout:
            await ch.query(
                "SELECT sleepEachRow(0.5) FROM numbers(6) SETTINGS max_block_size = 1",
                workload=Workload.INTERACTIVE,
                settings={"max_execution_time": 1},
            )
        assert timeout.value.kind is ClickHouseErrorKind.TIMEOUT
        with pytest.raises(ClickHouseError) as syntax:
            await ch.query("SELEC 1", workload=Workload.INTERACTIVE)
        assert syntax.value.kind is ClickHouseErrorKind.UNKNOWN
        assert "Syntax error" in str(syntax.value) and "62" in str(syntax.value)
    finally:
        ch.close()


def test_error_responses_carry_code_header_and_status(engine: Engine) -> None:
    with httpx.Client(timeout=10) as http:
        syntax = http.post(engine.url, content=b"SELEC 1")
        assert (syntax.status_code, syntax.headers["x-clickhouse-exception-code"]) == (400, "62")
        assert syntax.text.startswith("Code: 62. DB::Exception: Syntax error")
        missing = http.post(engine.url, content=b"SELECT * FROM no_such_table")
        assert (missing.status_code, missing.headers["x-clickhouse-exception-code"]) == (404, "60")
        denied = http.post(engine.url, content=b"SELECT * FROM file('/etc/hostname', 'LineAsString')")
        assert (denied.status_code, denied.headers["x-clickhouse-exception-code"]) == (403, "497")


def test_health_and_plain_formats_for_humans(engine: Engine) -> None:
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{engine.url}/ping").text == "Ok.\n"
        assert http.get(f"{engine.url}/").text == "Ok.\n"
        assert http.get(engine.url, params={"query": "SELECT 1, 'a'"}).text == "1\ta\n"
        as_json = http.get(engine.url, params={"query": "SELECT 1 AS x FORMAT JSON"})
        assert as_json.json()["data"] == [{"x": 1}]
        assert as_json.headers["x-clickhouse-format"] == "JSON"
        # The query prefix in the URL and the rest in the body, as ClickHouse allows.
        split = http.post(engine.url, params={"query": "SELECT number FROM numbers(3)"}, content=b"WHERE number > 0")
        assert split.text == "1\n2\n"
        # GET is read-only, as in ClickHouse.
        write = http.get(engine.url, params={"query": "CREATE TABLE nope (a UInt8) ENGINE = Memory"})
        assert write.headers["x-clickhouse-exception-code"] == "164"


# --------------------------------------------------------------------------------------------
# users and profiles
# --------------------------------------------------------------------------------------------
async def test_export_user_runs_with_its_profile_and_the_stricter_limit(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path, user="tracehouse_interactive", export_user="tracehouse_export")
    try:
        check = (
            "SELECT getSetting('max_threads') AS threads, getSetting('priority') AS priority, "
            "getSetting('os_thread_priority') AS nice, getSetting('max_memory_usage') AS memory, "
            "getSetting('max_execution_time') AS timeout"
        )
        # tracehouse's export class asks for 10 threads and 20 GB; the profile allows 2 threads.
        export = (await ch.query(check, workload=Workload.EXPORT))[0]
        assert (export["threads"], export["priority"], export["nice"]) == (min(2, CORES), 5, 19)
        assert export["memory"] == 20_000_000_000
        # The client's smaller memory cap wins over the profile's.
        smaller = await ch.query(check, workload=Workload.EXPORT, settings={"max_memory_usage": 1_000_000_000})
        assert smaller[0]["memory"] == 1_000_000_000
        # 0 (unlimited) cannot loosen the profile, neither in the URL nor in a SETTINGS clause.
        loose = await ch.query(check + " SETTINGS max_memory_usage = 0", workload=Workload.EXPORT)
        assert loose[0]["memory"] == 20_000_000_000
        interactive = (await ch.query(check, workload=Workload.INTERACTIVE))[0]
        # The profile's 4 threads, or the machine's cores when it has fewer.
        assert (interactive["priority"], interactive["nice"], interactive["threads"]) == (1, 0, min(4, CORES))
    finally:
        ch.close()
    entries = query_log(engine, user_name="tracehouse_export")
    assert entries and entries[0]["profile"] == "tracehouse_export"
    ran = [e for e in entries if "getSetting('max_threads')" in e["query"]]
    threads = str(min(2, CORES))
    assert all(e["settings"]["max_threads"] == threads and e["client_settings"]["max_threads"] == "10" for e in ran)
    # Query texts carry data: a workload user reads only its own entries, the operator's reads all.
    own = httpx.get(
        f"{engine.url}/engine/query_log",
        params={"user_name": "tracehouse_export", "limit": "1000"},
        auth=("tracehouse_interactive", PASSWORDS["tracehouse_interactive"]),
        timeout=10,
    )
    assert (
        own.status_code == 200
        and own.text == ""
        and {e["user"] for e in query_log(engine, limit="1000")}
        >= {
            "tracehouse_export",
            "tracehouse_interactive",
        }
    )


def test_constraints_wrong_passwords_and_unknown_users(engine: Engine) -> None:
    auth = ("tracehouse_export", PASSWORDS["tracehouse_export"])
    with httpx.Client(timeout=10) as http:
        too_many = http.post(engine.url, params={"max_threads": "50"}, content=b"SELECT 1", auth=auth)
        assert too_many.headers["x-clickhouse-exception-code"] == "452"
        assert "shouldn't be greater than 10" in too_many.text
        jump = http.post(engine.url, content=b"SELECT 1 SETTINGS priority = 1", auth=auth)
        assert jump.headers["x-clickhouse-exception-code"] == "452"
        wrong = http.post(engine.url, content=b"SELECT 1", auth=("tracehouse_export", "nope"))
        assert (wrong.status_code, wrong.headers["x-clickhouse-exception-code"]) == (403, "516")
        nobody = http.post(
            engine.url, content=b"SELECT 1", headers={"X-ClickHouse-User": "ghost", "X-ClickHouse-Key": "x"}
        )
        assert (nobody.status_code, nobody.headers["x-clickhouse-exception-code"]) == (403, "516")
        by_params = http.post(
            engine.url,
            params={"user": "tracehouse_ingestion", "password": PASSWORDS["tracehouse_ingestion"]},
            content=b"SELECT getSetting('priority')",
        )
        assert by_params.text == "3\n"
    with pytest.raises(DatabaseError) as raised:
        clickhouse_connect.get_client(host="127.0.0.1", port=engine.port, username="ghost", password="x")
    assert raised.value.code == 516


def test_session_settings_never_leak_between_requests(engine: Engine) -> None:
    with httpx.Client(timeout=10) as http:
        default = http.post(engine.url, content=b"SELECT getSetting('max_threads')").text
        for _ in range(8):  # enough to reuse every pooled connection
            assert (
                http.post(engine.url, params={"max_threads": "1"}, content=b"SELECT getSetting('max_threads')").text
                == "1\n"
            )
            http.post(engine.url, content=b"SET max_threads = 1").raise_for_status()
            http.post(engine.url, content=b"USE system").raise_for_status()
        assert http.post(engine.url, content=b"SELECT getSetting('max_threads')").text == default
        assert http.post(engine.url, content=b"SELECT currentDatabase()").text == "default\n"


# --------------------------------------------------------------------------------------------
# streaming, cancellation, concurrency, process life
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_large_stream_keeps_engine_memory_bounded(engine: Engine, tmp_path: Path) -> None:
    ch = tracehouse_client(engine, tmp_path)
    sql = "SELECT number, repeat(toString(number), 20) AS padding FROM numbers(12000000)"
    peak, stop = [engine.rss()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(engine.rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    rows = nbytes = 0
    try:
        async for batch in ch.stream_arrow(sql, workload=Workload.EXPORT, batch_rows=65536):
            rows += batch.num_rows
            nbytes += batch.nbytes
    finally:
        stop.set()
        sampler.join()
        ch.close()
    assert rows == 12_000_000 and nbytes > 1_500_000_000
    growth = max(peak) - peak[0]
    print(f"streamed {nbytes / 1e9:.2f} GB; engine RSS {peak[0] / 1e6:.0f} MB -> peak {max(peak) / 1e6:.0f} MB")
    assert growth < 400_000_000, f"engine RSS grew by {growth / 1e6:.0f} MB while streaming"


def _query_log_entry(engine: Engine, query_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = query_log(engine, query_id=query_id)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"query {query_id} never finished in the engine")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT number FROM system.numbers FORMAT TSV",  # streams rows until stopped
        "SELECT count() FROM numbers(100000000000) FORMAT TSV",  # a long scan that sends nothing yet
    ],
)
def test_client_disconnect_cancels_the_query(engine: Engine, sql: str) -> None:
    query_id = f"disconnect-{'stream' if 'system.numbers' in sql else 'scan'}"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as conn:
        body = sql.encode()
        head = f"POST /?query_id={query_id} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        if "system.numbers" in sql:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")  # rows are on their way
        else:
            time.sleep(1.0)  # the scan runs; nothing is sent yet
    started = time.monotonic()
    entry = _query_log_entry(engine, query_id)
    assert entry["status"] == "cancelled" and entry["cancel_reason"] == "client disconnected"
    assert time.monotonic() - started < 8
    running = "SELECT count() FROM system.processes WHERE query NOT LIKE '%system.processes%'"
    assert httpx.post(engine.url, content=running.encode()).text == "0\n"


def test_queries_run_in_parallel(engine: Engine) -> None:
    def sleep_query() -> None:
        httpx.post(engine.url, content=b"SELECT sleep(1.5)", timeout=30).raise_for_status()

    started = time.monotonic()
    threads = [threading.Thread(target=sleep_query) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert elapsed < 2.7, f"three 1.5 s queries took {elapsed:.1f} s: they did not run in parallel"


@pytest.mark.slow
def test_sigterm_stops_running_queries_and_a_second_engine_is_refused(tmp_path: Path) -> None:
    first = Engine(tmp_path / "data", free_port(), users_file=None)
    first.wait_ready()
    try:
        second = Engine(tmp_path / "data", free_port(), users_file=None)
        assert second.proc.wait(timeout=60) == 1
        err = second.stop()
        assert err.strip().count("\n") == 0 and "already serves" in err, err
        result: list[Any] = []

        def long_query() -> None:
            try:
                result.append(httpx.post(first.url, content=b"SELECT count() FROM numbers(100000000000)", timeout=60))
            except httpx.HTTPError as exc:
                result.append(exc)

        runner = threading.Thread(target=long_query)
        runner.start()
        time.sleep(1.0)
        stopping = time.monotonic()
        first.stop(timeout=15)
        runner.join(timeout=15)
        assert time.monotonic() - stopping < 6
        assert first.proc.returncode == 0
        outcome = result[0]
        assert isinstance(outcome, httpx.HTTPError) or outcome.headers.get("x-clickhouse-exception-code") == "394"
    finally:
        first.stop()


def test_profiles_never_ask_for_more_threads_than_the_machine_has_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracehouse.engine.users import cap_threads, load_users

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    shipped = load_users(USERS_FILE)
    threads = {name: user.profile.settings.get("max_threads") for name, user in shipped.users.items()}
    assert threads["tracehouse_interactive"] == "4"  # written for the servers it is deployed to
    small = cap_threads(shipped, 2)
    assert {n: u.profile.settings.get("max_threads") for n, u in small.users.items()} == {
        name: (None if value is None else str(min(int(value), 2))) for name, value in threads.items()
    }
    large = cap_threads(shipped, 16)
    assert {n: u.profile.settings.get("max_threads") for n, u in large.users.items()} == threads
    assert (
        small.users["tracehouse_interactive"].profile.constraints
        == shipped.users["tracehouse_interactive"].profile.constraints
    )


def test_the_engine_caps_a_profiles_threads_at_its_cores(engine: Engine) -> None:
    auth = ("tracehouse_interactive", PASSWORDS["tracehouse_interactive"])
    applied = httpx.post(engine.url, content=b"SELECT getSetting('max_threads')", auth=auth, timeout=10).text
    assert int(applied) == min(4, CORES)


def test_has_cap_sys_nice_reads_the_effective_capabilities(tmp_path: Path) -> None:
    from tracehouse.engine.server import has_cap_sys_nice

    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert has_cap_sys_nice(status)
    status.write_text("Name:\tx\nCapEff:\t000001fffe7fffff\n")  # bit 23 (CAP_SYS_NICE) cleared
    assert not has_cap_sys_nice(status)
    assert not has_cap_sys_nice(tmp_path / "missing")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv to drop CAP_SYS_NICE")
def test_an_engine_without_cap_sys_nice_says_thread_priorities_are_ignored(tmp_path: Path) -> None:
    """ClickHouse ignores os_thread_priority without CAP_SYS_NICE; the engine says so instead of
    letting the shipped profiles' nice values silently do nothing."""
    from tracehouse.engine.server import has_cap_sys_nice

    drop = ("setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice")
    without = Engine(tmp_path / "without", free_port(), prefix=drop)
    without.wait_ready()
    assert "engine_thread_priority_ignored" in without.stop()
    if has_cap_sys_nice():  # as root (or with the capability) the engine has nothing to warn about
        normal = Engine(tmp_path / "with", free_port())
        normal.wait_ready()
        assert "engine_thread_priority_ignored" not in normal.stop()


def test_by_default_a_background_query_waits_while_an_interactive_one_runs(engine: Engine) -> None:
    interactive = ("tracehouse_interactive", PASSWORDS["tracehouse_interactive"])
    ingestion = ("tracehouse_ingestion", PASSWORDS["tracehouse_ingestion"])
    slow = threading.Thread(
        target=lambda: httpx.post(engine.url, content=b"SELECT sleep(1)", auth=interactive, timeout=30)
    )
    slow.start()
    time.sleep(0.3)
    query_id = f"gated-{os.getpid()}-{time.monotonic_ns()}"
    started = time.monotonic()
    answer = httpx.post(engine.url, params={"query_id": query_id}, content=b"SELECT 1", auth=ingestion, timeout=30)
    waited = time.monotonic() - started
    slow.join()
    assert answer.text == "1\n"
    entry = _query_log_entry(engine, query_id)
    assert entry["admission_wait_ms"] > 400 and waited > 0.4, (entry["admission_wait_ms"], waited)
