"""Deterministic ids: every row id is a hash of the inputs that define the row.

Re-running a stage with the same inputs therefore produces the same ids, and the store's
`ON CONFLICT DO NOTHING` turns a re-run into a no-op instead of a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import orjson

ID_HEX_CHARS = 20  # 80 bits: collision odds at 10M rows are about 4e-11
TOUCAN_NAMESPACE = uuid.UUID("6f1c2a9e-3b7d-5c4e-9a8b-0d1e2f3a4b5c")


# Datetimes and dataclasses go through `default=str` as they do with the json module, so the
# text (and every id hashed from it) is the same whichever encoder wrote it.
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_CANONICAL |= orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values hash equally. orjson: the agent
    loop hashes the whole conversation every turn, and the json module made that a fifth of
    the client's CPU."""
    try:
        return orjson.dumps(value, default=str, option=_CANONICAL).decode()
    except TypeError:  # what orjson refuses (integers beyond 64 bits): the reference encoder
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )


def content_hash(value: Any, length: int = 64) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def make_id(kind: str, *parts: Any) -> str:
    """A row id like `task_3f2a...`: the kind keeps ids of different tables apart."""
    return f"{kind}_{content_hash([kind, *parts], ID_HEX_CHARS)}"


def schema_hash(input_schema: dict[str, Any]) -> str:
    """Hash of a tool's JSON schema; a changed schema gets a new tool version."""
    return content_hash(input_schema, 16)


def export_uuid(row_id: str) -> str:
    """UUIDv5 for exported rows, as in Toucan-1.5M (version digit 5, deterministic)."""
    return str(uuid.uuid5(TOUCAN_NAMESPACE, row_id))
