"""The job system: bullmq on Redis, wrapped with the workarounds tracehouse needs."""

from tracehouse.queues.connection import bullmq_connection, ping_redis, redis_client
from tracehouse.queues.registry import QueueSpec, RoleGroup, queues_for_role, registry_of, retry_options
from tracehouse.queues.runner import Processor, QueueProducer, QueueRunner

__all__ = [
    "Processor",
    "QueueProducer",
    "QueueRunner",
    "QueueSpec",
    "RoleGroup",
    "bullmq_connection",
    "ping_redis",
    "queues_for_role",
    "redis_client",
    "registry_of",
    "retry_options",
]
