"""Ingestion: Langfuse-compatible endpoints, durable raw batches, verified merges into ClickHouse."""
