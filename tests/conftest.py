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
