"""How the operator describes a remote inference engine (settings.yaml or the command line).

Only the operator configures engines: `--remote-engine URL` and `remote_engines:` in the
server's settings file.  Nothing a browser or an API request sends can add one or change
where one points (docs/SECURITY.md).  The engine's key is never written here: the
settings name an environment variable, read when the client is made.
"""

from __future__ import annotations

import os
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webui.paths import is_plain_name

# Which dialect of sampling fields the engine speaks (webui/remote/capabilities.py).
EngineKind = Literal["openai", "vllm", "llama.cpp", "llama-cpp-python", "webui"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class RemoteEngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # The engine's OpenAI base URL, as an OpenAI client takes it: http://gpu-box:8000/v1
    url: str = Field(max_length=2000)
    # Shown in the Model tab and as `owned_by` in /v1/models; default: host:port.
    name: str = Field("", max_length=64)
    # Environment variable holding the engine's key (sent as a Bearer token); none: no key.
    api_key_env: str | None = None
    # Seconds to wait for a connection, and between two pieces of a streamed reply.
    timeout: float = Field(60.0, gt=0, le=3600)
    verify_tls: bool = True
    # A PEM file of the CA that signed an https engine's certificate (a team's private CA),
    # trusted for this engine alone, beside the system's CAs.
    ca_bundle: str | None = Field(None, max_length=4096)
    kind: EngineKind = "openai"
    # Requests streamed to this engine at once; more are refused as busy (it batches them).
    max_concurrent: int = Field(32, ge=1, le=1024)

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://gpu-box:8000/v1")
        if parts.username or parts.password:
            # A key in the URL would end up in logs and error messages; name a variable instead.
            raise ValueError("must not carry a user or password; put the key in api_key_env")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without ?query or #fragment")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> RemoteEngineConfig:
        if not self.name:
            parts = urlsplit(self.url)
            object.__setattr__(self, "name", f"{parts.hostname}:{parts.port or parts.scheme}")
        if not is_plain_name(self.name.replace(":", "_")):
            raise ValueError("name: letters, digits, '-', '_', '.' and ':' only")
        return self

    def api_key(self) -> str | None:
        """The key from the environment, read at the moment of use (never stored in settings)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def from_flag(url: str) -> RemoteEngineConfig:
    """`--remote-engine URL`: defaults for everything but the URL."""
    return RemoteEngineConfig(url=url)
