"""Secret and PII scrubbing applied to every exported string before anything is written.

Each pattern has a stable name; `Scrubber` counts replacements per name so the dataset card
can say what was removed. Replacements keep the shape of the value (an email stays an email, a
path stays a path) so tool-call arguments still validate against their schemas.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EMAIL_PLACEHOLDER = "user@example.com"
PATH_PLACEHOLDER = "/workspace"

_SEG = r"[^/\s\"'`<>,;)\]}]+"  # one path component
# The private root of a local path; what follows it stays, so `/tmp/sbx-1/data/a.txt` becomes
# `/workspace/data/a.txt`. Under /tmp the first component counts as the root when more follows.
_LOCAL_ROOT = (
    rf"(?<![\w./-])(?:/root|/home/{_SEG}|/Users/{_SEG}|/tmp(?:/{_SEG}(?=/))?)"
    r"(?=[/\s\"'`<>,;)\]}]|$)"
)

# name -> (pattern, replacement). Order matters: private keys and bearer tokens before the
# generic key patterns, so a token inside a header is counted once, as a bearer token.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        "[REDACTED_PRIVATE_KEY]",
    ),
    (
        "bearer_token",
        re.compile(r"(?i)\bbearer\s+(?!\[REDACTED)[A-Za-z0-9._~+/=-]{12,}"),
        "Bearer [REDACTED_TOKEN]",
    ),
    ("openai_key", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "[REDACTED_API_KEY]"),
    (
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        "[REDACTED_API_KEY]",
    ),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[REDACTED_API_KEY]"),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "[REDACTED_API_KEY]"),
    (
        "generic_secret",
        re.compile(
            r"(?i)\b((?:api[_-]?key|secret|password|passwd|access[_-]?token)\s*[=:]\s*[\"']?)"
            r"(?!\[REDACTED)[A-Za-z0-9._~+/-]{12,}"
        ),
        r"\1[REDACTED_SECRET]",
    ),
    (
        "email",
        re.compile(r"\b(?!user@example\.com\b)[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
        EMAIL_PLACEHOLDER,
    ),
    ("local_path", re.compile(_LOCAL_ROOT), PATH_PLACEHOLDER),
)


# Every pattern above needs one of these; a string without any is clean (one cheap search
# instead of nine). Keep in step when adding a pattern.
TRIGGER = re.compile(
    r"(?i)@|/|sk-|gh[pousr]_|github_pat_|AKIA|ASIA|xox|BEGIN|bearer|api[_-]?key|secret|passw"
    r"|access[_-]?token"
)


@dataclass
class Scrubber:
    """Replaces secrets, emails and local paths; counts what it replaced, by pattern name."""

    counts: Counter[str] = field(default_factory=Counter)

    def scrub_text(self, text: str) -> str:
        if not TRIGGER.search(text):
            return text
        for name, pattern, replacement in SECRET_PATTERNS:
            text, n = pattern.subn(replacement, text)
            if n:
                self.counts[name] += n
        return text

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
    """Names of the patterns that still match `text`; empty for a clean string."""
    found = []
    for name, pattern, _ in SECRET_PATTERNS:
        if pattern.search(text):
            found.append(name)
    return found
