"""Shared test set-up: quiet Prefect, one Prefect test server for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cli.prefect_env import configure_quiet_prefect

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
configure_quiet_prefect()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for flow tests; started once, only if a test asks for it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first, the rest after in their usual order (a stable
    sort). dev.py gives each xdist worker a whole file at a time (`--dist loadfile`) in
    collection order (`--no-loadscope-reorder`: xdist's own order, files with the most tests
    first, put the two-minute files of one or two tests last, one worker running them while
    the other idled); started first, the short files fill in around them (longest first: the
    usual greedy rule for balancing jobs over machines)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
