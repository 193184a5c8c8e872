"""`python -m toucan` is the `toucan` command."""

from toucan.cli import app

app()
