"""One secret detector for the trajectory filter (flags) and the export scrubber (replaces).

Rules are data: `tasks/secret_rules.toml` holds detect-secrets' plugin patterns (the library
of provider formats) and ours, each with a kind, trigger keywords and a replacement; local
paths come from `tasks/local_paths.py`. Both callers count what they find by kind.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from detect_secrets.filters.heuristic import (
    is_potential_uuid,
    is_prefixed_with_dollar_sign,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.local_paths import KIND as LOCAL_PATH
from tasks.local_paths import find_local_paths
from toucan.errors import ConfigError

RULES_FILE = Path(__file__).with_name("secret_rules.toml")
# replacement of a value found verbatim (an environment secret, this machine's folders)
LITERAL_REPLACEMENTS = {"environment_secret": "[REDACTED_SECRET]", "machine_path": "/workspace"}
# characters a token may continue with after a detect-secrets match stops short of its end
TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-+/=.]*")
# key=value values that are not secrets whatever the name says: booleans, placeholders,
# masks (`****`), numbers and dates
NOT_A_SECRET = re.compile(
    r"(?i)true|false|null|none|nil|undefined|changeme|\[?redacted.*|example.*|(.)\1+|[\d\s:.+/tz-]+"
)
# key=value thresholds: a password needs 6+ characters and a digit, a symbol or some entropy;
# a token or key needs 12+ characters of letters and digits above the entropy floor.
# detect-secrets flags base64 strings from 4.5 bits per character, which a 12-character
# value cannot reach (log2(12) = 3.6); these floors are for short values next to a name.
STRONG_MIN_CHARS, STRONG_MIN_ENTROPY = 6, 3.0
WEAK_MIN_CHARS, WEAK_MIN_ENTROPY = 12, 3.5
BASE64_ENTROPY = Base64HighEntropyString()
SHORT_CHARS, SHORT_CACHE_SIZE = 64, 16_384


class SecretRule(BaseModel):
    """One entry of the rules file: a pattern of ours (`regex`) or of a detect-secrets plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    replacement: str
    keywords: list[str] = Field(default_factory=list)
    group: int = 0
    check: Literal["jwt", "assignment"] | None = None
    regex: str | None = None
    plugin: str | None = None  # "module.Class" under detect_secrets.plugins
    patterns: list[int] | None = None  # indexes into the plugin's denylist; None = all

    @model_validator(mode="after")
    def one_source(self) -> SecretRule:
        if (self.regex is None) == (self.plugin is None):
            raise ValueError(f"rule {self.kind!r} needs exactly one of `regex` and `plugin`")
        if any(k != k.lower() for k in self.keywords):
            raise ValueError(f"rule {self.kind!r}: keywords are matched in lower case")
        return self


class Finding(NamedTuple):
    """One secret in a text: [start, end) of kind `kind`, to become `replacement`.
    A tuple, not a record: the export makes one per secret of every string it writes."""

    start: int
    end: int
    kind: str
    replacement: str


@dataclass(frozen=True)
class CompiledRule:
    rule: SecretRule
    patterns: tuple[re.Pattern[str], ...]
    widen: bool  # a detect-secrets pattern: extend the match to the end of its token


def plugin_patterns(rule: SecretRule) -> tuple[re.Pattern[str], ...]:
    """The chosen `denylist` patterns of a detect-secrets plugin. Raises ConfigError."""
    module_name, _, class_name = (rule.plugin or "").rpartition(".")
    try:
        plugin = getattr(
            importlib.import_module(f"detect_secrets.plugins.{module_name}"), class_name
        )
        denylist = tuple(plugin.denylist)
        chosen = range(len(denylist)) if rule.patterns is None else rule.patterns
        return tuple(denylist[i] for i in chosen)
    except (ImportError, AttributeError, IndexError, TypeError) as exc:
        raise ConfigError(f"{rule.kind}: no detect-secrets plugin {rule.plugin!r}: {exc}",
                          reason="bad_secret_rules") from exc  # fmt: skip


def compile_rule(rule: SecretRule) -> CompiledRule:
    """Raises ConfigError for a rule without a pattern or with one that does not compile."""
    if rule.plugin:
        return CompiledRule(rule, plugin_patterns(rule), widen=rule.group == 0)
    try:
        return CompiledRule(rule, (re.compile(rule.regex or "(?!)"),), widen=False)
    except re.error as exc:
        raise ConfigError(f"{rule.kind}: bad regex: {exc}", reason="bad_secret_rules") from exc


def load_rules(path: Path = RULES_FILE) -> list[SecretRule]:
    """The `[[rules]]` of a rules file, in file order. Raises ConfigError for a file that
    does not parse or an entry that does not validate."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return [SecretRule.model_validate(entry) for entry in data.get("rules", [])]
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"secret rules {path}: {exc}", reason="bad_secret_rules") from exc


def is_assigned_secret(match: re.Match[str]) -> bool:
    """A NAME=value whose value looks like a secret for its name (see the thresholds)."""
    value = match.group("value")
    if (
        NOT_A_SECRET.fullmatch(value)
        or is_templated_secret(value)
        or is_prefixed_with_dollar_sign(value)
        or is_potential_uuid(value)
        or is_sequential_string(value)
        or value.startswith(("/", "~", "http"))
    ):
        return False
    entropy = BASE64_ENTROPY.calculate_shannon_entropy(value)
    if match.group("strong"):
        mixed = not value.isalpha()
        return len(value) >= STRONG_MIN_CHARS and (mixed or entropy >= STRONG_MIN_ENTROPY)
    has_both = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    return len(value) >= WEAK_MIN_CHARS and has_both and entropy >= WEAK_MIN_ENTROPY


def is_jwt(match: re.Match[str], token: str) -> bool:
    return JwtTokenDetector.is_formally_valid(token) or JwtTokenDetector.is_formally_valid(
        match.group(0)
    )


def token_end(text: str, end: int) -> int:
    """Where the token running through `end` stops (a trailing full stop is not part of it)."""
    stop = TOKEN_TAIL.match(text, end).end()
    while stop > end and text[stop - 1] == ".":
        stop -= 1
    return stop


class SecretDetector:
    """Finds secrets, e-mails and local paths in text: non-overlapping `Finding`s, by start.

    `literals` adds values to find verbatim, by kind (`environment_secret`, `machine_path`):
    this process's secret environment values, this machine's folders. Raises ConfigError for
    a rule that does not compile or an unknown literal kind."""

    def __init__(
        self,
        rules: Sequence[SecretRule],
        literals: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.rules = [compile_rule(rule) for rule in rules]
        if unknown := sorted(set(literals or {}) - set(LITERAL_REPLACEMENTS)):
            raise ConfigError(
                f"no replacement for literal kinds {unknown}", reason="bad_secret_rules"
            )
        self.literals = {
            kind: [v for v in values if v] for kind, values in (literals or {}).items()
        }
        self.always = frozenset(i for i, r in enumerate(rules) if not r.keywords)
        self.rules_by_keyword: dict[str, set[int]] = {}
        for index, rule in enumerate(rules):
            for keyword in rule.keywords:
                self.rules_by_keyword.setdefault(keyword, set()).add(index)
        # short strings (keys, names, roles) repeat across rows: their answers are cached
        self.find_short = functools.lru_cache(maxsize=SHORT_CACHE_SIZE)(self.find_uncached)

    def active_rules(self, text: str) -> list[CompiledRule]:
        """The rules one of whose keywords occurs in `text`, in rule order."""
        lowered = text.lower()
        chosen = set(self.always)
        for keyword, indexes in self.rules_by_keyword.items():
            if keyword in lowered:
                chosen |= indexes
        return [self.rules[i] for i in sorted(chosen)]

    def rule_findings(self, text: str, compiled: CompiledRule) -> list[Finding]:
        rule, found = compiled.rule, []
        for pattern in compiled.patterns:
            for match in pattern.finditer(text):
                group = rule.group if rule.group <= (pattern.groups or 0) else 0
                start, end = match.span(group)
                if end <= start:  # an optional group that did not take part
                    continue
                if compiled.widen:
                    end = token_end(text, end)
                if CHECKS.get(rule.check or "", lambda m, t: True)(match, text[start:end]):
                    found.append(Finding(start, end, rule.kind, rule.replacement))
        return found

    def find(self, text: str) -> tuple[Finding, ...]:
        """Every secret in `text`, by start; where two overlap, the earlier rule's wins."""
        if len(text) <= SHORT_CHARS:
            return self.find_short(text)
        return self.find_uncached(text)

    def find_uncached(self, text: str) -> tuple[Finding, ...]:
        candidates: list[Finding] = []
        for compiled in self.active_rules(text):
            candidates += self.rule_findings(text, compiled)
        candidates += [Finding(s, e, LOCAL_PATH, r) for s, e, r in find_local_paths(text)]
        for kind, values in self.literals.items():
            candidates += literal_findings(text, kind, values)
        return tuple(drop_overlaps(candidates))

    def redact(self, text: str) -> tuple[str, tuple[Finding, ...]]:
        """`text` with every finding replaced, and the findings."""
        findings = self.find(text)
        if not findings:
            return text, findings
        parts, last = [], 0
        for finding in findings:
            parts += [text[last : finding.start], finding.replacement]
            last = finding.end
        parts.append(text[last:])
        return "".join(parts), findings


def drop_overlaps(candidates: list[Finding]) -> list[Finding]:
    """The candidates (in priority order) that overlap no earlier one, sorted by start."""
    kept: list[Finding] = []
    for finding in candidates:
        i = bisect.bisect_left(kept, (finding.start,))
        if (i and kept[i - 1].end > finding.start) or (
            i < len(kept) and kept[i].start < finding.end
        ):
            continue
        kept.insert(i, finding)
    return kept


def literal_findings(text: str, kind: str, values: Sequence[str]) -> list[Finding]:
    found = []
    for value in values:
        start = text.find(value)
        while start >= 0:
            found.append(Finding(start, start + len(value), kind, LITERAL_REPLACEMENTS[kind]))
            start = text.find(value, start + len(value))
    return found


CHECKS: dict[str, Callable[[re.Match[str], str], bool]] = {
    "assignment": lambda match, _token: is_assigned_secret(match),
    "jwt": is_jwt,
}


@functools.cache
def default_detector() -> SecretDetector:
    """The detector of the shipped rules, compiled once per process."""
    return SecretDetector(load_rules())
