"""The job system: bullmq on Redis, wrapped with the workarounds tracehouse needs."""

from tracehouse.queues.connection import bullmq_connection, ping_redis, redis_client
from tracehouse.queues.registry import QUEUES, QueueSpec, RoleGroup, queues_for_role
from tracehouse.queues.runner import Processor, QueueProducer, QueueRunner

__all__ = [
    "QUEUES",
    "Processor",
    "QueueProducer",
    "QueueRunner",
    "QueueSpec",
    "RoleGroup",
    "bullmq_connection",
    "ping_redis",
    "queues_for_role",
    "redis_client",
]
