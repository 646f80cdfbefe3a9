import subprocess
import sys

import pytest

from tracehouse.errors import ConfigError
from tracehouse.settings import BlobBackend, WorkerRole, load_settings


def test_defaults_are_embedded_and_bind_loopback(tmp_path):
    s = load_settings(data_dir=tmp_path)
    assert s.host == "127.0.0.1"
    assert s.embedded_clickhouse and s.redis_url is None and s.database_url is None
    assert s.metadata_url.startswith("sqlite:///") and s.metadata_url.endswith("metadata.db")
    assert s.blob_backend is BlobBackend.LOCAL
    assert s.worker_role is WorkerRole.ALL
    # The fork's export defaults, but a priority below ingestion's (ClickHouse: larger is lower).
    assert (s.export_max_threads, s.export_priority, s.export_max_memory_usage, s.export_timeout_ms) == (
        10,
        5,
        20_000_000_000,
        600_000,
    )


def test_langfuse_names_are_read(monkeypatch):
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123/")
    monkeypatch.setenv("CLICKHOUSE_EXPORT_URL", "http://export_user:pw@replica:8123")
    monkeypatch.setenv("REDIS_CONNECTION_STRING", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/langfuse")
    monkeypatch.setenv("LANGFUSE_WORKER_ROLE", "export")
    monkeypatch.setenv("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_THREADS", "3")
    monkeypatch.setenv("LANGFUSE_S3_EVENT_UPLOAD_BUCKET", "raw")
    monkeypatch.setenv("PORT", "4100")
    s = load_settings()
    assert s.clickhouse_url == "http://ch:8123"
    assert s.clickhouse_export_url == "http://export_user:pw@replica:8123"
    assert s.redis_url == "redis://127.0.0.1:6379/2"
    assert s.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/langfuse"
    assert s.worker_role is WorkerRole.EXPORT
    assert s.export_max_threads == 3
    assert s.blob_backend is BlobBackend.S3
    assert s.port == 4100


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("PORT", "eighty", "PORT='eighty' is invalid"),
        ("PORT", "70000", "PORT='70000' is invalid"),
        ("LANGFUSE_WORKER_ROLE", "everything", "'all', 'ingestion' or 'export'"),
        ("CLICKHOUSE_URL", "tcp://ch:9000", "expected an http:// or https:// URL"),
        ("REDIS_URL", "localhost:6379", "expected a redis://, rediss:// or unix:// URL"),
        ("DATABASE_URL", "mysql://x", "expected a postgresql:// or sqlite:/// URL"),
        ("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_THREADS", "-1", "LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_THREADS="),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, var, value, expected):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert var in message
    assert "\n" not in message


def _cli(args, env_extra, tmp_path, timeout=60):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"), **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "tracehouse", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_reports_bad_setting_in_one_line(tmp_path):
    result = _cli(["worker"], {"LANGFUSE_WORKER_ROLE": "bogus"}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: LANGFUSE_WORKER_ROLE='bogus' is invalid")


def test_cli_reports_unreachable_redis_in_one_line(tmp_path):
    result = _cli(["worker", "--role", "export"], {"REDIS_URL": "redis://127.0.0.1:1"}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach Redis at redis://127.0.0.1:1")


def test_cli_reports_unreachable_postgres_in_one_line(tmp_path):
    result = _cli(["projects", "list"], {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "metadata database" in lines[0] and "127.0.0.1:1" in lines[0]


def test_cli_reports_unreachable_clickhouse_in_one_line(tmp_path):
    result = _cli(["migrate"], {"CLICKHOUSE_URL": "http://127.0.0.1:1"}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach ClickHouse at http://127.0.0.1:1")
