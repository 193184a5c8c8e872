"""The embedded model server's command line: the flags that make prompt reading fast."""

from __future__ import annotations

from pathlib import Path

from toucan.config import LocalModelConfig
from toucan.llm.local_server import LocalModelServer


def test_the_local_server_reads_prompts_on_its_own_threads_without_keeping_all_logits(
    tmp_path: Path,
) -> None:
    command = LocalModelServer(LocalModelConfig(n_threads=1)).build_command(tmp_path / "m.gguf")
    assert command[command.index("--n_threads_batch") + 1] == "1"
    assert command[command.index("--logits_all") + 1] == "false"
    wider = LocalModelConfig(n_threads=1, n_threads_batch=2)
    command = LocalModelServer(wider).build_command(tmp_path / "m.gguf")
    assert command[command.index("--n_threads_batch") + 1] == "2"


def test_the_local_server_keeps_recent_prompt_states_in_ram_unless_told_not_to(
    tmp_path: Path,
) -> None:
    command = LocalModelServer(LocalModelConfig(prompt_cache_mb=64)).build_command(tmp_path / "m")
    assert command[command.index("--cache") + 1] == "true"
    assert command[command.index("--cache_size") + 1] == str(64 << 20)
    off = LocalModelServer(LocalModelConfig(prompt_cache_mb=0)).build_command(tmp_path / "m")
    assert "--cache" not in off
