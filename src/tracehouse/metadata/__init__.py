"""The metadata database: projects, API keys and cron bookkeeping (SQLite or PostgreSQL)."""

from tracehouse.metadata.database import MetadataDB, mask_url
from tracehouse.metadata.models import ApiKey, Base, CronJob, Project
from tracehouse.metadata.projects import (
    PUBLIC_KEY_PREFIX,
    SECRET_KEY_PREFIX,
    CreatedKey,
    KeyInfo,
    ProjectInfo,
    create_api_key,
    create_project,
    display_secret_key,
    ensure_default_project,
    ensure_init_project,
    generate_key_pair,
    get_project,
    hash_secret_key,
    list_api_keys,
    list_projects,
    revoke_api_key,
    verify_api_key,
)

__all__ = [
    "PUBLIC_KEY_PREFIX",
    "SECRET_KEY_PREFIX",
    "ApiKey",
    "Base",
    "CreatedKey",
    "CronJob",
    "KeyInfo",
    "MetadataDB",
    "Project",
    "ProjectInfo",
    "create_api_key",
    "create_project",
    "display_secret_key",
    "ensure_default_project",
    "ensure_init_project",
    "generate_key_pair",
    "get_project",
    "hash_secret_key",
    "list_api_keys",
    "list_projects",
    "mask_url",
    "revoke_api_key",
    "verify_api_key",
]
