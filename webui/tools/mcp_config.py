"""user_data/mcp.json: the MCP servers to use, in Claude Desktop's format, so a file
written for Claude Desktop, LM Studio or Text Generation WebUI works here unchanged:

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "some-server", "/data"], "env": {"KEY": "v"}},
        "search": {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer x"}}}}

An entry with `command` is started as a process and spoken to over stdio; one with
`url` over streamable HTTP.  A broken entry is reported by name; the others load.
Only the owner writes this file (it starts programs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.paths import is_plain_name

MAX_CONFIG_BYTES = 256 * 1024
CONFIG_NAME = "mcp.json"


class StdioServerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Claude Desktop's other keys ("type", "disabled", ...)
    command: str = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    disabled: bool = False


class HttpServerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(pattern=r"^https?://", max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    disabled: bool = False


ServerConfig = StdioServerConfig | HttpServerConfig


def read_mcp_config(user_data: Path) -> tuple[dict[str, ServerConfig], list[str]]:
    """The servers in user_data/mcp.json (none if there is no file) and a problem line
    for each entry, or the file, that could not be used."""
    path = user_data / CONFIG_NAME
    if not path.is_file():
        return {}, []
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return {}, [f"{CONFIG_NAME}: larger than {MAX_CONFIG_BYTES} bytes"]
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return {}, [f"{CONFIG_NAME}: cannot be read as JSON ({type(exc).__name__})"]
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        return {}, [f'{CONFIG_NAME}: expected {{"mcpServers": {{name: {{...}}}}}}']
    found: dict[str, ServerConfig] = {}
    problems = []
    for name, entry in servers.items():
        config, problem = _entry(name, entry)
        if problem:
            problems.append(f"{CONFIG_NAME}: server {name[:64]!r}: {problem}")
        elif config is not None and not config.disabled:
            found[name] = config
    return found, problems


def _entry(name: str, entry: Any) -> tuple[ServerConfig | None, str | None]:
    if not is_plain_name(name) or len(name) > 64:
        return None, "a server name must be a plain name of at most 64 characters"
    if not isinstance(entry, dict) or ("command" in entry) == ("url" in entry):
        return None, "give either a command (stdio) or a url (streamable HTTP)"
    try:
        return (StdioServerConfig if "command" in entry else HttpServerConfig)(**entry), None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return None, f"{field}: {first['msg']}"
