"""HTTP: the public API, health and metrics."""
