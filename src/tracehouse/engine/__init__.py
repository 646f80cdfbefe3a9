"""The embedded engine: one process owns the chDB directory and serves ClickHouse's HTTP interface.

`tracehouse engine --data-dir D --port P` (or `python -m tracehouse.engine`); other tracehouse
processes then use `CLICKHOUSE_URL=http://127.0.0.1:P` like any ClickHouse server.
"""
