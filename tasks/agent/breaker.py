"""Circuit breaker per MCP server: after N consecutive infrastructure failures (start failed,
crashed, timed out) the server is paused for the rest of the run, with the reason kept.

Tool errors do not count: a tool answering "not found" is a working server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerPaused:
    server_id: str
    reason: str
    detail: str


@dataclass
class CircuitBreaker:
    threshold: int = 5
    failures: dict[str, int] = field(default_factory=dict)
    opened: dict[str, ServerPaused] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_failure(self, server_id: str, reason: str, detail: str = "") -> None:
        with self._lock:
            self.failures[server_id] = self.failures.get(server_id, 0) + 1
            if self.failures[server_id] >= self.threshold and server_id not in self.opened:
                self.opened[server_id] = ServerPaused(
                    server_id,
                    reason,
                    f"{self.failures[server_id]} consecutive failures; last: {detail[:300]}",
                )

    def record_success(self, server_id: str) -> None:
        with self._lock:
            self.failures[server_id] = 0

    def paused(self, server_id: str) -> ServerPaused | None:
        return self.opened.get(server_id)

    def pause(self, paused: ServerPaused) -> None:
        """Carry a pause decided elsewhere (e.g. by an earlier batch of the same run)."""
        with self._lock:
            self.opened.setdefault(paused.server_id, paused)
