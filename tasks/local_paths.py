"""Absolute paths of the machine a trajectory ran on, found so the export can rewrite them.

The rule (one `local_path` kind, replaced by the placeholder root `/workspace`, the rest of
the path kept so the value is still a path and the same path always maps to the same text):

| form | local when | the part replaced |
|---|---|---|
| POSIX `/a/b...` (2+ components) | its root `a` is not a system root (`SYSTEM_ROOTS`) | see below |
| Windows `C:\\a\\b...` | `a` is not `Windows`, `Program Files*` or `path` | as POSIX, drive kept |
| UNC `\\\\server\\share...` | always | server and share |
| home `~/a`, `~user/a` | always | `~` / `~user` |

Replaced part: the root, plus the user for `/home/<user>` and `/Users/<user>`, plus the next
component for any other root when a third component follows (`/tmp/sbx-1/data/a.txt` ->
`/workspace/data/a.txt`, `/var/lib/app/x.db` -> `/workspace/app/x.db`, `/srv/x` ->
`/workspace/x`, `/root/notes.md` -> `/workspace/notes.md`).

Kept: system locations an ordinary answer names (`/usr/bin/python`, `/etc/hosts`,
`/dev/null`, `/proc/cpuinfo`), the documentation placeholder `/path/to/...`, single-component
paths (`/help`, `/s`), URL paths (the slash follows a host; `file:///home/x` is a path), and a
route after an HTTP method (`GET /repos/x`). Other routes such as `/api/v1/users` are
rewritten like any path: their shape stays, so a schema still accepts them.
Separators are kept as written, so JSON-escaped Windows paths (`C:\\\\Users\\\\bob`) work too.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PLACEHOLDER_ROOT = "workspace"
KIND = "local_path"
# system locations whose paths say nothing about the machine's owner or layout, the
# documentation placeholder (`/path/to/file`) and our own placeholder
SYSTEM_ROOTS = frozenset({"bin", "sbin", "usr", "lib", "lib32", "lib64", "etc", "dev", "proc",
                          "sys", "path", PLACEHOLDER_ROOT})  # fmt: skip
WINDOWS_SYSTEM_ROOTS = frozenset({"path", PLACEHOLDER_ROOT})
WINDOWS_SYSTEM_PREFIXES = ("windows", "program files")  # also `Program Files (x86)`
USER_CONTAINERS = frozenset({"home", "users"})  # the next component is a user name
HOME_ROOTS = frozenset({"root"})  # already a home: only the root goes
HTTP_METHOD_BEFORE = re.compile(r"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+$")

_COMPONENT = r"[^/\\\s\"'`<>|,;()\[\]{}]+"
# a slash after a host or a word is a URL path or a fraction; after `file://` it is a path
POSIX_PATH = re.compile(
    rf"(?:(?<![\w.~/:\\@+-])|(?<=file://))/(?P<c1>{_COMPONENT})(?=/{_COMPONENT})"
)
# a Windows directory may hold single spaces (`Program Files`) when a separator follows it
_WIN_COMPONENT = r"(?:[^\\/:*?\"<>|\s]+(?: [^\\/:*?\"<>|\s]+)*(?=\\)|[^\\/:*?\"<>|\s,;()]+)"
WINDOWS_PATH = re.compile(
    rf"(?<![\w\\])(?P<drive>[A-Za-z]:)(?P<sep>\\{{1,2}})(?P<c1>{_WIN_COMPONENT})"
)
UNC_PATH = re.compile(r"(?<![\w\\:])(?P<lead>(?:\\\\){1,2})(?P<server>[\w.$-]+)\\{1,2}[\w.$-]+")
HOME_PATH = re.compile(rf"(?<![\w.~/:\\-])~[\w.-]*(?=/{_COMPONENT})")
NEXT_POSIX = re.compile(rf"/({_COMPONENT})")
NEXT_WINDOWS = re.compile(rf"\\{{1,2}}({_WIN_COMPONENT})")


class PathSpan(NamedTuple):
    """Text to replace: [start, end) becomes `replacement`."""

    start: int
    end: int
    replacement: str


def consumed_end(text: str, root_end: int, root: str, next_component: re.Pattern[str]) -> int:
    """Where the private prefix of a path ends, given where its root component ends."""
    second = next_component.match(text, root_end)
    if second is None:
        return root_end
    if root.lower() in USER_CONTAINERS:
        return second.end()
    if root.lower() in HOME_ROOTS:
        return root_end
    return second.end() if next_component.match(text, second.end()) else root_end


def after_http_method(text: str, start: int) -> bool:
    return bool(HTTP_METHOD_BEFORE.search(text[max(0, start - 12) : start]))


def posix_spans(text: str) -> list[PathSpan]:
    spans = []
    for match in POSIX_PATH.finditer(text):
        root = match.group("c1")
        if root.lower() in SYSTEM_ROOTS or after_http_method(text, match.start()):
            continue
        end = consumed_end(text, match.end(), root, NEXT_POSIX)
        spans.append(PathSpan(match.start(), end, "/" + PLACEHOLDER_ROOT))
    return spans


def windows_spans(text: str) -> list[PathSpan]:
    spans = []
    for match in WINDOWS_PATH.finditer(text):
        root = match.group("c1")
        if root.lower() in WINDOWS_SYSTEM_ROOTS or root.lower().startswith(WINDOWS_SYSTEM_PREFIXES):
            continue
        end = consumed_end(text, match.end(), root, NEXT_WINDOWS)
        replacement = match.group("drive") + match.group("sep") + PLACEHOLDER_ROOT
        spans.append(PathSpan(match.start(), end, replacement))
    for match in UNC_PATH.finditer(text):
        if match.group("server").lower() == PLACEHOLDER_ROOT:
            continue
        spans.append(PathSpan(match.start(), match.end(), match.group("lead") + PLACEHOLDER_ROOT))
    return spans


def find_local_paths(text: str) -> list[PathSpan]:
    """Spans of `text` that name a local path's private prefix, with their replacements.
    Cheap on text without `/`, `\\` or `~`."""
    spans: list[PathSpan] = []
    if "/" in text:
        spans += posix_spans(text)
        if "~" in text:
            spans += [
                PathSpan(m.start(), m.end(), "/" + PLACEHOLDER_ROOT)
                for m in HOME_PATH.finditer(text)
            ]
    if "\\" in text:
        spans += windows_spans(text)
    return spans
