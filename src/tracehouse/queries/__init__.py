"""Active queries: the Langfuse-compatible public read API."""
