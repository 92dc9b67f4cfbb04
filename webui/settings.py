"""Typed, validated, frozen settings.

Precedence: built-in defaults < settings.yaml < command-line flags.  The command
line is parsed in cli.py into a plain dict of the flags the user actually gave, so a
flag that was not given never overrides a value from settings.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

from webui.errors import AppError
from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.loaders.options import flat_model, merged_specs
from webui.paths import is_plain_name
from webui.remote.config import RemoteEngineConfig, from_flag
from webui.safe_yaml import YAMLRefused, load_yaml

log = logging.getLogger(__name__)

DEMO_MODEL = "demo-kjv-4m"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Settings files are small; anything bigger is a mistake or an attack (docs/SECURITY.md).
MAX_YAML_BYTES = 1 << 20

SETTINGS_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True)

# One settings.yaml key per loader option, same type and range as the schema's.
LoaderSettings = flat_model("LoaderSettings", BUILTIN_SCHEMAS, config=SETTINGS_CONFIG)

# Keys a settings file may not set (docs/SECURITY.md): the schemas' command-line-only options.
COMMAND_LINE_ONLY = tuple(spec.name for spec in merged_specs(BUILTIN_SCHEMAS) if spec.scope == "command_line")


class SettingsError(AppError, ValueError):
    """A settings file or flag value that cannot be used, with the reason."""


class Settings(LoaderSettings):
    model_config = SETTINGS_CONFIG

    # -- model -----------------------------------------------------------------
    model: str | None = Field(DEMO_MODEL, description="Model folder to load at start.")
    model_dir: Path = Field(PROJECT_ROOT / "models", description="Where models live.")
    # Every loader option (dtype, load_in_4bit, gpu_split, ...) is a field too, inherited
    # from LoaderSettings: declared once, in the loaders' schemas.

    # -- data ------------------------------------------------------------------
    user_data_dir: Path = Field(PROJECT_ROOT / "user_data")
    presets_dir: Path = Field(PROJECT_ROOT / "presets", description="Bundled presets.")
    preset: str = "min_p"
    sampling: dict[str, Any] | None = Field(
        None, description="Last used sampling values (delta from neutral); saved by the app."
    )

    # -- extensions --------------------------------------------------------------
    extensions: tuple[str, ...] = Field((), description="Extensions to load, in this order.")
    extensions_dir: Path = Field(PROJECT_ROOT / "extensions", description="Bundled extensions.")
    extension_params: dict[str, Any] = Field(
        {}, description="'<extension>-<param>' values from settings.yaml, overriding an extension's params."
    )

    # -- server ----------------------------------------------------------------
    listen: bool = False
    listen_host: str | None = None
    listen_port: int = Field(7860, ge=1, le=65535)
    gradio_auth: str | None = Field(None, description="user:pass[,user2:pass2]")
    gradio_auth_path: Path | None = Field(None, description="File of user:pass entries (lines or commas).")
    ssl_keyfile: Path | None = None
    ssl_certfile: Path | None = None
    listen_without_auth: bool = Field(
        False, description="Serve beyond loopback with no password (trusted networks only)."
    )
    share: bool = Field(False, description="Ask Gradio for a public share link (needs auth and internet).")
    max_queue: int = Field(64, ge=1, le=10_000, description="Waiting requests before 'busy'.")
    allow_image_urls: bool = Field(
        False, description="API: fetch http(s) image URLs sent in messages (public addresses only).")
    upload_quota_mb: int = Field(
        200, ge=1, le=1_000_000, description="MB of uploads the UI keeps per user (the oldest go first).")
    upload_total_mb: int = Field(
        2048, ge=1, le=10_000_000, description="MB of uploads the UI keeps for all users together.")
    upload_max_age: int = Field(3600, ge=60, le=30 * 86_400, description="Seconds an upload is kept.")
    max_connections_per_client: int = Field(
        100, ge=1, le=100_000, description="Open connections one client address may hold, per port.")
    header_timeout: float = Field(
        10.0, gt=0, le=3600, description="Seconds a client has to send a request's headers.")
    body_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds a request's body may pause before the connection is closed.")
    max_batch: int = Field(8, ge=1, le=256, description="Requests decoded together at most.")
    max_batch_per_user: int | None = Field(
        None, ge=1, le=256, description="Running requests per user or API key (default: --max-batch - 1).")
    prefix_cache_gib: float = Field(
        1.0, ge=0, le=1024, description="Memory kept for reusing earlier prompts' KV cache; 0 = off.")
    max_kv_gib: float | None = Field(
        None, gt=0, le=4096, description="Memory for the running batch's KV cache (default: from free memory).")
    prefill_chunk: int = Field(
        512, ge=0, le=1_048_576,
        description="Tokens of a new prompt read at a time while other requests decode; 0 = read whole.")
    prompt_lookup: int = Field(
        0, ge=0, le=16, description="Tokens drafted from the context (speculative decoding) for a request "
        "that does not set prompt_lookup_num_tokens; 0 = only for requests that ask.")

    # -- models on demand (webui/resident.py) ---------------------------------------
    load_on_demand: bool | None = Field(
        None, description="A request naming a listed model loads it (default: on for a local single-user "
        "server, off with --listen or several users).")
    max_resident_gib: float | None = Field(
        None, gt=0, le=65536, description="Memory the resident models may take together (default: free "
        "memory, as Will it fit? counts it).")
    idle_unload_minutes: float | None = Field(
        None, gt=0, le=525_600, description="Unload a model nobody used for this long (default: never).")

    # -- OpenAI-compatible API ---------------------------------------------------
    api: bool = Field(False, description="Serve the OpenAI-compatible API beside the UI.")
    api_port: int = Field(5000, ge=1, le=65535)
    api_key: str | None = Field(None, min_length=8, description="Key every API request must send.")
    admin_key: str | None = Field(None, min_length=8, description="Key for model management endpoints.")
    api_cors_origins: tuple[str, ...] = Field((), description="Web origins allowed to call the API.")

    # -- tools in the chat (owner only: this file or the command line) -----------------
    web_search: str | None = Field(
        None, pattern=r"^https?://", max_length=2000,
        description="SearXNG-compatible search URL; turns on the web tools (off: no outbound connection).")

    # -- remote inference engines (operator only: this file or the command line) -------
    remote_engines: tuple[RemoteEngineConfig, ...] = Field(
        (), description="OpenAI-compatible engines to serve models from (url, name, api_key_env, timeout, ...).")
    remote_engine_urls: tuple[str, ...] = Field((), description="--remote-engine URL, repeatable.")

    @field_validator("model")
    @classmethod
    def _model_is_plain_name(cls, value: str | None) -> str | None:
        # The full listing check happens when loading; here we only stop paths early.
        if value is not None and (not value or "/" in value or "\\" in value or value in {".", ".."}):
            raise ValueError("must be the name of a folder inside the model directory")
        return value

    @field_validator("extensions")
    @classmethod
    def _extension_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Whether each is available is checked against discovery when loading.
        bad = [name for name in value if not is_plain_name(name)]
        if bad:
            raise ValueError(f"not an extension name: {bad[0]!r}")
        return value

    @field_validator("gradio_auth")
    @classmethod
    def _auth_pairs(cls, value: str | None) -> str | None:
        if value is not None:
            parse_auth(value)
        return value

    @property
    def host(self) -> str:
        if self.listen_host:
            return self.listen_host
        # All interfaces only when asked (--listen); __main__ refuses it without a password.
        return "0.0.0.0" if self.listen else "127.0.0.1"  # noqa: S104

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def has_auth(self) -> bool:
        return bool(self.gradio_auth or self.gradio_auth_path)

    def auth_pairs(self) -> list[tuple[str, str]]:
        """Users from --gradio-auth and --gradio-auth-path; raises ValueError if unreadable."""
        pairs = parse_auth(self.gradio_auth) if self.gradio_auth else []
        if self.gradio_auth_path:
            try:
                text = self.gradio_auth_path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read {self.gradio_auth_path}: {exc.strerror}") from exc
            entries = [e for line in text.splitlines() for e in line.split(",") if e.strip()]
            if not entries:
                raise ValueError(f"{self.gradio_auth_path} holds no user:password entries")
            pairs += parse_auth(",".join(entries))
        return pairs

    def all_remote_engines(self) -> tuple[RemoteEngineConfig, ...]:
        """The settings file's engines, then the command line's (both are the operator's)."""
        return (*self.remote_engines, *(from_flag(url) for url in self.remote_engine_urls))

    @field_validator("remote_engine_urls")
    @classmethod
    def _engine_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            from_flag(url)  # refuses a bad URL (or one carrying a password) at start-up
        return value

    @property
    def loads_on_demand(self) -> bool:
        """Whether any request may load a listed model: as set, else only on a loopback
        server with at most one user (everyone there is its owner)."""
        if self.load_on_demand is not None:
            return self.load_on_demand
        return self.is_loopback and not self.listen and len(self.auth_pairs()) <= 1

    @property
    def lora_dir(self) -> Path:
        return self.user_data_dir / "loras"

    @property
    def offload_dir(self) -> Path:
        return self.disk_cache_dir or self.user_data_dir / "cache"

    @property
    def settings_file(self) -> Path:
        return self.user_data_dir / "settings.yaml"


def parse_auth(value: str) -> list[tuple[str, str]]:
    """'u1:p1,u2:p2' -> [(u1, p1), (u2, p2)]; refuses empty users or passwords."""
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError("expected user:password[,user2:password2]")
        pairs.append((user, password))
    return pairs


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a small YAML file that must hold a mapping; raise SettingsError otherwise."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise SettingsError(f"{path.name}: larger than {MAX_YAML_BYTES} bytes")
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path.name}: cannot be read as YAML ({exc.__class__.__name__})") from exc
    except YAMLRefused as exc:  # the message names the problem, never the (expanded) content
        raise SettingsError(f"{path.name}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise SettingsError(f"{path.name}: top level must be a mapping of names to values")
    return data


def _coerce_paths(values: dict[str, Any]) -> dict[str, Any]:
    # strict mode refuses str for Path; YAML and argparse give strings.
    out = dict(values)
    for key in ("model_dir", "user_data_dir", "presets_dir", "extensions_dir", "gradio_auth_path", "ssl_keyfile",
                "ssl_certfile"):
        if isinstance(out.get(key), str):
            out[key] = Path(out[key])
    return out


def split_extension_params(values: dict[str, Any]) -> dict[str, Any]:
    """Move Text Generation WebUI-style '<extension>-<param>' keys into extension_params.

    Our own settings never contain '-', so such a key is an extension's.
    """
    out = {k: v for k, v in values.items() if "-" not in k}
    params = {k: v for k, v in values.items() if "-" in k}
    if params:
        out["extension_params"] = {**out.get("extension_params", {}), **params}
    if isinstance(out.get("extensions"), list):
        out["extensions"] = tuple(out["extensions"])
    return out


def _coerce_yaml(values: dict[str, Any]) -> dict[str, Any]:
    # YAML gives lists for tuples; strict mode refuses them.  (Loader options convert
    # their own values: their types carry the conversion.)
    out = _coerce_paths(values)
    if isinstance(out.get("api_cors_origins"), list):
        out["api_cors_origins"] = tuple(out["api_cors_origins"])
    if isinstance(out.get("remote_engines"), list):
        out["remote_engines"] = tuple(out["remote_engines"])
    return out


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each refused field and why."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def build_settings(flags: dict[str, Any], settings_path: Path | None = None) -> tuple[Settings, list[str]]:
    """Merge defaults < settings.yaml < flags.

    Returns the settings and a list of warnings.  A broken settings.yaml is reported
    and ignored (the app still starts); a bad command-line flag raises SettingsError,
    since the user is right there to fix it.
    """
    warnings: list[str] = []
    base = Settings(**_coerce_paths({k: v for k, v in flags.items() if k == "user_data_dir"}))
    path = settings_path or base.settings_file
    from_file: dict[str, Any] = {}
    if path.exists():
        try:
            from_file = split_extension_params(_coerce_yaml(read_yaml_mapping(path)))
            Settings(**from_file)  # validate the file on its own, to blame it precisely
        except SettingsError as exc:
            warnings.append(f"settings file ignored: {exc}")
            from_file = {}
        except ValidationError as exc:
            warnings.append(f"settings file {path.name} ignored: {describe_validation_error(exc)}")
            from_file = {}
    elif settings_path is not None:
        raise SettingsError(f"settings file not found: {settings_path}")
    for key in COMMAND_LINE_ONLY:
        # Code-execution switches come from the command line only (docs/SECURITY.md).
        if from_file.pop(key, None):
            warnings.append(f"{key} in a settings file is ignored; pass it as a flag")
    try:
        return Settings(**{**from_file, **_coerce_paths(flags)}), warnings
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from exc
