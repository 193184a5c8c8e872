"""The `report` stage: one self-contained HTML page over the store (see tasks/report.py)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.report import write_report
from toucan.config import load_settings
from toucan.store import Store


@flow(name="report", log_prints=False, persist_result=False, validate_parameters=False)
def report_flow(
    store: str | None = None, config: str | None = None, out: str = "out/report.html"
) -> dict[str, int | str]:
    """Write the HTML report; returns where it is and what it covers."""
    target = Store(store or load_settings(config).store)
    counts = write_report(target, Path(out))
    return {"out": out, **counts}
