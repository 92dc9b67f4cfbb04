"""The Runtime: everything the app needs, built once at start and passed explicitly.

UI and API code call the Runtime; the Runtime calls the engine; the engine calls the
loader.  Nothing here is global: tests build as many Runtimes as they like.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from webui.chat.prompt import Message, render_chat_prompt
from webui.generation.engine import (
    CancelToken,
    GenerationEngine,
    GenerationRequest,
    GenerationStream,
    QueueFull,
)
from webui.fit import Memory, estimate, read_shape, report
from webui.hub import Downloader
from webui.loaders.base import LoadedModel, LoadError, LoadOptions
from webui.loaders.registry import LoaderRegistry, default_registry
from webui.model_manager import ModelManager
from webui.model_settings import ModelSettings, ModelSettingsStore
from webui.paths import NameRefused, is_plain_name, list_entries, pick
from webui.presets import (
    ParamsError,
    PresetLibrary,
    SamplingParams,
    make_params,
    model_defaults,
    preset_delta,
)
from webui.settings import Settings, SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text

log = logging.getLogger(__name__)

MAX_TEMPLATE_BYTES = 100_000


class ActiveRequests:
    """Which requests each browser session (or API client) is running, for Stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, set[CancelToken]] = {}

    def start(self, owner: str) -> CancelToken:
        token = CancelToken()
        with self._lock:
            self._by_owner.setdefault(owner, set()).add(token)
        return token

    def finish(self, owner: str, token: CancelToken) -> None:
        with self._lock:
            tokens = self._by_owner.get(owner, set())
            tokens.discard(token)
            if not tokens:
                self._by_owner.pop(owner, None)

    def stop(self, owner: str) -> int:
        """Cancel every request of `owner` and no one else's; return how many."""
        with self._lock:
            tokens = list(self._by_owner.get(owner, ()))
        for token in tokens:
            token.cancel()
        return len(tokens)


@dataclass
class Runtime:
    settings: Settings
    models: ModelManager
    engine: GenerationEngine
    presets: PresetLibrary
    default_params: SamplingParams
    model_settings: ModelSettingsStore
    downloads: Downloader
    requests: ActiveRequests = field(default_factory=ActiveRequests)
    warnings: list[str] = field(default_factory=list)

    # -- models ------------------------------------------------------------------
    def saved_model_settings(self, name: object) -> ModelSettings:
        return self.model_settings.get(name) if is_plain_name(name) else ModelSettings()

    def templates(self) -> dict[str, Any]:
        """Chat templates the user keeps in user_data/templates/*.jinja."""
        return list_entries(self.settings.user_data_dir / "templates", suffixes=(".jinja",))

    def load_model(
        self, name: object, choice: ModelSettings | None = None, timeout: float | None = None, save: bool = True
    ) -> tuple[LoadedModel, str | None]:
        """Load `name` with its saved settings, updated by `choice`; remember the result.

        Returns the model and a warning when the settings could not be saved.
        """
        wanted = self.saved_model_settings(name)
        if choice is not None:
            wanted = wanted.merged(choice)
        template = None
        if wanted.chat_template:
            path = pick(wanted.chat_template, self.templates(), "chat template")
            if path.stat().st_size > MAX_TEMPLATE_BYTES:
                raise LoadError(f"chat template {wanted.chat_template} is larger than {MAX_TEMPLATE_BYTES} bytes")
            template = path.read_text(encoding="utf-8")

        def adjust(loaded: LoadedModel) -> None:
            if wanted.context_length:
                loaded.context_length = min(loaded.context_length, wanted.context_length)
            if template is not None:
                loaded.tokenizer.chat_template = template

        loaded = self.models.load(name, overrides=wanted.load_overrides(), timeout=timeout, adjust=adjust)
        return loaded, self.model_settings.save(loaded.name, wanted) if save else None

    def fit_report(self, name: object, choice: ModelSettings | None = None) -> str:
        """"Will it fit?" for a listed model with the given (or saved) settings."""
        folder = pick(name, self.models.available(), "model")
        wanted = self.saved_model_settings(name)
        if choice is not None:
            wanted = wanted.merged(choice)
        options = self.models.options_for(wanted.load_overrides())
        shape = read_shape(folder, trust_remote_code=options.trust_remote_code)
        context = min(wanted.context_length or shape.context_length, shape.context_length)
        memory = Memory.detect()
        cpu = options.device == "cpu" or not memory.gpus
        chosen = estimate(shape, context, dtype=options.dtype, cpu=cpu, load_in_8bit=options.load_in_8bit,
                          load_in_4bit=options.load_in_4bit, use_double_quant=options.use_double_quant)
        return report(shape, chosen, memory, cpu)

    def stream(
        self, owner: str, prompt: str | Callable[[Any], str], params: SamplingParams, logprobs: int | None = None
    ) -> OwnedStream:
        token = self.requests.start(owner)
        try:
            stream = self.engine.generate(GenerationRequest(prompt, params, token, logprobs))
        except QueueFull:
            self.requests.finish(owner, token)
            raise
        return OwnedStream(stream, lambda: self.requests.finish(owner, token))

    def chat(self, owner: str, history: Sequence[Message], system: str, params: SamplingParams) -> OwnedStream:
        turns = [dict(m) for m in history]  # a snapshot: the caller may keep editing its list
        return self.stream(owner, lambda tokenizer: render_chat_prompt(tokenizer, turns, system), params)

    def stop(self, owner: str) -> int:
        return self.requests.stop(owner)

    def with_model_defaults(self, params: SamplingParams) -> SamplingParams:
        """`params` updated with the loaded model's generation_config.json values."""
        loaded = self.models.current
        return make_params(model_defaults(loaded.folder), base=params) if loaded else params

    def remember(self, params: SamplingParams) -> str | None:
        """Save the last used values into settings.yaml; returns a warning, if any.

        Only the `sampling` key is rewritten, atomically; a settings file we cannot
        parse is left alone rather than overwritten.
        """
        path = self.settings.settings_file
        try:
            data = read_yaml_mapping(path) if path.exists() else {}
        except SettingsError as exc:
            return f"last used values not saved: {exc}"
        data["sampling"] = preset_delta(params)
        try:
            atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        except OSError as exc:
            return f"last used values not saved: {exc.strerror or exc}"
        return None


class OwnedStream:
    """A GenerationStream that deregisters itself from ActiveRequests when done."""

    def __init__(self, stream: GenerationStream, on_done):
        self._stream = stream
        self._on_done = on_done

    @property
    def stats(self):
        return self._stream.stats

    @property
    def logprobs(self):
        """Per-token log-probabilities so far (when the request asked for them)."""
        return self._stream.streamer.logprobs if self._stream.streamer else []

    def __iter__(self):
        try:
            yield from self._stream
        finally:
            self._on_done()


def load_options(settings: Settings) -> LoadOptions:
    """The loader options the command line and settings.yaml give (each model may override
    the user-settable ones; never the code-execution switches)."""
    return LoadOptions(
        dtype=settings.dtype,
        device="cpu" if settings.cpu else "auto",
        attn_implementation=settings.attn_implementation,
        load_in_8bit=settings.load_in_8bit,
        load_in_4bit=settings.load_in_4bit,
        quant_type=settings.quant_type,
        use_double_quant=settings.use_double_quant,
        compute_dtype=settings.compute_dtype,
        gpu_split=settings.gpu_split,
        cpu_memory=settings.cpu_memory,
        disk=settings.disk,
        offload_dir=settings.offload_dir,
        allow_pickle=settings.allow_pickle,
        trust_remote_code=settings.trust_remote_code,
    )


def build_runtime(
    settings: Settings,
    registry: LoaderRegistry | None = None,
    warnings: list[str] | None = None,
    use_remembered: bool = True,
) -> Runtime:
    """Assemble the runtime and load the start-up model (a failure is a warning).

    Start-up sampling values: the last used ones (settings.yaml `sampling`) when there
    are any and `use_remembered`; otherwise the preset, updated by the model's own
    generation_config.json.
    """
    models = ModelManager(settings.model_dir, registry or default_registry(), load_options(settings),
                          lora_dir=settings.lora_dir)
    presets = PresetLibrary(settings.presets_dir, settings.user_data_dir / "presets")
    notes = list(warnings or [])
    try:
        default_params = presets.load(settings.preset)
    except (NameRefused, ParamsError) as exc:
        notes.append(f"preset {settings.preset!r} not used: {exc}")
        default_params = SamplingParams()
    runtime = Runtime(
        settings=settings,
        models=models,
        engine=GenerationEngine(models, max_pending=settings.max_queue),
        presets=presets,
        default_params=default_params,
        model_settings=ModelSettingsStore(settings.user_data_dir),
        downloads=Downloader(settings.model_dir),
        warnings=notes,
    )
    if settings.model:
        try:
            runtime.load_model(settings.model, save=False)
        except (NameRefused, LoadError) as exc:
            runtime.warnings.append(f"start-up model not loaded: {exc}")
    remembered = None
    if use_remembered and settings.sampling:
        try:
            remembered = make_params(settings.sampling)
        except ParamsError as exc:
            runtime.warnings.append(f"last used sampling values ignored: {exc}")
    runtime.default_params = remembered or runtime.with_model_defaults(default_params)
    for note in runtime.warnings:
        log.warning(note)
    return runtime
