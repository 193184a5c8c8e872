"""The model layer: LiteLLM Router over the configured model groups, cache, events, local model."""

import os
import warnings

# LiteLLM fetches its price map from the network at import unless told not to (10 s offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# LiteLLM's TypedDicts make pydantic warn (ReadOnly items) as its modules load lazily: noise.
warnings.filterwarnings(
    "ignore", message=r"Items? .* using the `ReadOnly` qualifier", category=UserWarning
)
