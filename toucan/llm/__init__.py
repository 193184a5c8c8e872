"""The model layer: the configured model groups behind one router (direct HTTP or LiteLLM), the
response cache, events, prices, the run's budget and circuit breaker, the local model."""

import os
import warnings

# LiteLLM fetches its price map from the network at import unless told not to (10 s offline);
# set here so it holds whenever LiteLLM is imported later (toucan/llm/providers.py).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# LiteLLM's TypedDicts make pydantic warn (ReadOnly items) as its modules load lazily: noise.
warnings.filterwarnings(
    "ignore", message=r"Items? .* using the `ReadOnly` qualifier", category=UserWarning
)
