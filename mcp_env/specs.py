"""Server specs: what we need to know to reach one MCP server, whatever its transport.

A spec is a pydantic union discriminated on `transport`. Catalog readers (our YAML, the
Smithery registry) produce specs; the session layer consumes them. Nothing here opens a
connection.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from toucan.ids import make_id
from toucan.records import protocol_annotations


class ConfigField(BaseModel):
    """A setting the server needs before it can start (often a credential)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    required: bool = True
    secret: bool = False
    description: str = ""
    env: str | None = None  # environment variable that carries it, for stdio servers


class ToolSpec(BaseModel):
    """A tool as a catalog declares it (used by --specs-only, where nothing is connected).
    Onboarding judges it like a listed tool (mcp_env/listing.py)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    annotations: dict[str, Any] = Field(default_factory=dict)

    _protocol_annotations = field_validator("annotations", mode="before")(protocol_annotations)

    def as_listed(self) -> dict[str, Any]:
        """The tool as a server would send it in `tools/list` (camelCase keys)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": self.annotations,
        }


class SandboxSpec(BaseModel):
    """How a stdio server (or an HTTP spec's `launch`) is confined (mcp_env/confine.py).

    Every server runs in a sandbox that shows it only the system runtime, its own program and
    its sandbox dir (and, unless isolated, the seed dir and the files its command line names).
    `isolate` makes that stricter: no network unless `network` says otherwise, and nothing
    of the host beyond its program and the paths named here."""

    model_config = ConfigDict(extra="forbid")

    isolate: bool = False
    network: bool | None = None  # None: on for a server that is not isolated, off for one that is
    # files and folders copied from the fleet's seed data into the server's working dir
    seed: list[str] = Field(default_factory=list)
    # host paths the server may read (or also write); {sandbox}, {seed}, {fleet} are filled
    read_only_paths: list[str] = Field(default_factory=list)
    writable_paths: list[str] = Field(default_factory=list)

    @property
    def has_network(self) -> bool:
        return self.network if self.network is not None else not self.isolate


class _SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    domain: str | None = None  # one of the 26 categories, when the catalog knows it
    secondary_domains: list[str] = Field(default_factory=list)
    config: list[ConfigField] = Field(default_factory=list)
    config_values: dict[str, str] = Field(default_factory=dict)
    tools: list[ToolSpec] = Field(default_factory=list)  # declared tools (specs-only)
    source: str = "yaml"  # yaml | fleet | smithery
    package: str | None = None  # e.g. "pypi:mcp-server-time==2026.10.19"
    license: str | None = None
    homepage: str | None = None
    repository: str | None = None
    title: str | None = None  # display name when `name` is a registry key (Smithery)
    usage_count: int = 0
    featured: bool = False
    read_only_tools: list[str] = Field(default_factory=list)  # safe to call in the health check
    probe: dict[str, Any] | None = None  # {"tool": name, "arguments": {...}} for the health check
    # shared: one process serves every trajectory of a batch (stateless servers); per_trajectory:
    # each trajectory gets its own process and sandbox, so no trajectory sees another's writes
    isolation: Literal["shared", "per_trajectory"] = "shared"
    # what the catalog reader cut to fit `limits` (tokens: description_cut, tools_cut); the
    # server row's notes carry them
    catalog_notes: list[str] = Field(default_factory=list)

    @property
    def server_id(self) -> str:
        return make_id("srv", self.source, self.name)

    def missing_config(self) -> list[str]:
        """Required config fields with no value: such a server 'needs credentials'."""
        return [f.name for f in self.config if f.required and not self.config_values.get(f.name)]


class StdioSpec(_SpecBase):
    transport: Literal["stdio"] = "stdio"
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    sandbox: SandboxSpec = Field(default_factory=SandboxSpec)


class _UrlSpec(_SpecBase):
    """A server reached at a URL: the fields the two HTTP transports share."""

    # False for a bare `url` (and every Smithery record): the transport was our guess, so a
    # server that answers on SSE instead is no fault of the catalog
    transport_declared: bool = True
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    # a local process that serves `url` (e.g. a stdio server behind a gateway); None = remote
    launch: StdioSpec | None = None


class HttpSpec(_UrlSpec):
    transport: Literal["streamable-http"] = "streamable-http"


class SseSpec(_UrlSpec):
    transport: Literal["sse"] = "sse"


ServerSpec = Annotated[StdioSpec | HttpSpec | SseSpec, Field(discriminator="transport")]
SERVER_SPEC_ADAPTER: TypeAdapter[StdioSpec | HttpSpec | SseSpec] = TypeAdapter(ServerSpec)


def parse_server_spec(raw: dict[str, Any]) -> StdioSpec | HttpSpec | SseSpec:
    """Validate one spec dict; raises pydantic.ValidationError with a readable message.

    A spec without `transport` is stdio when it has a command, streamable HTTP when it has a
    URL (`transport_declared=False`: connecting falls back to SSE without complaint).
    """
    if "transport" not in raw:
        if "command" in raw:
            raw = {**raw, "transport": "stdio"}
        elif "url" in raw:
            raw = {**raw, "transport": "streamable-http", "transport_declared": False}
    return SERVER_SPEC_ADAPTER.validate_python(raw)
