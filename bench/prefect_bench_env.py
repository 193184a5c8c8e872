"""What a benchmark that runs Prefect flows sets before it imports them: LiteLLM's local price
map (offline), a patient ephemeral API server (busy hosts start it slowly), the project and
bench folders on sys.path, and Prefect's quiet logging. Import it first:
`import prefect_bench_env  # noqa: F401` (the script's own folder is on sys.path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cli.prefect_env import configure_quiet_prefect  # noqa: E402

configure_quiet_prefect()
