"""`python -m cli` is the `toucan` command."""

from cli import app

app()
