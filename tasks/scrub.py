"""Secret and PII scrubbing applied to every exported string before anything is written.

What counts as a secret is `tasks/secrets.py` (the same detector the trajectory filter flags
with); this module replaces what it finds and counts replacements by kind, so the dataset
card can say what was removed. Replacements keep the shape of the value (an e-mail stays an
e-mail, a path stays a path, a URL with a password stays a URL) so tool-call arguments still
validate against their schemas.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks.secrets import SecretDetector, default_detector, load_rules
from toucan.secrets import is_secret_name

MIN_SECRET_CHARS = 8  # shorter environment values would match ordinary words


def environment_secrets() -> list[str]:
    """Values of this process's secret-looking environment variables (API keys and the like),
    found verbatim whatever their format."""
    return [
        value
        for name, value in os.environ.items()
        if is_secret_name(name) and len(value) >= MIN_SECRET_CHARS
    ]


@functools.cache
def export_detector() -> SecretDetector:
    """The shipped rules plus this process's environment secrets (read once per process)."""
    secrets = environment_secrets()
    if not secrets:
        return default_detector()
    return SecretDetector(load_rules(), literals={"environment_secret": secrets})


@dataclass
class Scrubber:
    """Replaces secrets, e-mails and local paths; counts what it replaced, by kind."""

    detector: SecretDetector = field(default_factory=export_detector)
    counts: Counter[str] = field(default_factory=Counter)

    def scrub_text(self, text: str) -> str:
        cleaned, findings = self.detector.redact(text)
        for finding in findings:
            self.counts[finding.kind] += 1
        return cleaned

    def scrub_value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value (dict keys included)."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {self.scrub_value(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


def find_secrets(text: str) -> list[str]:
    """Kinds of secret still in `text` (sorted, each once); empty for a clean string."""
    return sorted({finding.kind for finding in export_detector().find(text)})
