"""`python -m tracehouse.engine`: the same command as `tracehouse engine`."""

from tracehouse.engine.cli import app

app()
