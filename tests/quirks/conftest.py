"""The quirk cases' checks live in tests/quirks/checks.py: have pytest explain their asserts."""

import pytest

pytest.register_assert_rewrite("tests.quirks.checks")
