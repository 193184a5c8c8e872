from tests.trajectories.conftest import fake_llm, quiet_litellm_typeddict_warning

__all__ = ["fake_llm", "quiet_litellm_typeddict_warning"]
