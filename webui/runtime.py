"""The Runtime: everything the app needs, built once at start and passed explicitly.

UI and API code call the Runtime; the Runtime calls the engine; the engine calls the
loader.  Nothing here is global: tests build as many Runtimes as they like.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webui.api.usage import UsageCounter
from webui.chat.templates import TemplateLibrary
from webui.extensions import ExtensionHost, discover, load_extensions, make_state, params_from_state
from webui.extensions.reply import ReplyStream
from webui.generation.backend import GIB, ServingOptions
from webui.generation.embedding import EmbeddingsUnsupported
from webui.generation.engine import (
    CancelToken,
    GenerationEngine,
    GenerationError,
    GenerationRequest,
    GenerationStream,
    QueueFull,
    TokenLogprob,
)
from webui.documents.service import DocumentService
from webui.fit import Memory, estimate, gguf_estimate, gguf_report, gib, read_shape, report, verdict
from webui.hub import Downloader
from webui.loaders.cpu_features import cpu_flags
from webui.loaders.cpu_fp16 import fbgemm_fp16_ready
from webui.loaders.base import LoadedModel, LoadError
from webui.loaders.gguf_build import refuse_while_building
from webui.loaders.registry import LoaderRegistry, default_registry
from webui.model_manager import ModelManager
from webui.model_settings import ModelSettings, ModelSettingsStore
from webui.paths import NameRefused, is_plain_name, pick
from webui.generation.params import ParamsError, SamplingParams, make_params
from webui.generation.request import ModelNotServed, ui_party
from webui.presets import PresetLibrary, model_defaults, preset_delta
from webui.remote.engine import RemoteModel
from webui.resident import ResidentModels
from webui.remote.routing import RemoteEngines, SessionChoices
from webui.settings import LoaderSettings, Settings, SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text, remove_stale_temporaries
from webui.tools.registry import ToolRegistry
from webui.tools.web import web_tools
from webui.training.service import TrainingService
from webui.steer.library import VectorLibrary
from webui.steer.service import SteerService
from webui.inspect.service import InspectService
from webui.userdata import UserSpaces

log = logging.getLogger(__name__)



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

    def running(self, owner: str) -> int:
        """How many requests `owner` has that have not ended."""
        with self._lock:
            return len(self._by_owner.get(owner, ()))

    def stop(self, owner: str) -> int:
        """Cancel every request of `owner` and no one else's; return how many."""
        with self._lock:
            tokens = list(self._by_owner.get(owner, ()))
        for token in tokens:
            token.cancel()
        return len(tokens)


class UIRestart:
    """A request, from the Session tab, to rebuild the UI with other extensions.

    The serving loop (webui/ui/app.py) takes it; the process, the loaded model and
    running requests carry on.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._names: tuple[str, ...] = ()

    def request(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._event.set()

    def take(self, timeout: float) -> tuple[str, ...] | None:
        if not self._event.wait(timeout):
            return None
        self._event.clear()
        return self._names


@dataclass
class Runtime:
    settings: Settings
    models: ModelManager
    engine: GenerationEngine
    presets: PresetLibrary
    default_params: SamplingParams
    users: UserSpaces
    templates: TemplateLibrary
    model_settings: ModelSettingsStore
    downloads: Downloader
    training: TrainingService  # LoRA training and perplexity (webui/training/)
    requests: ActiveRequests = field(default_factory=ActiveRequests)
    warnings: list[str] = field(default_factory=list)
    extensions: ExtensionHost = field(default_factory=ExtensionHost)
    ui_restart: UIRestart = field(default_factory=UIRestart)
    # Remote engines (docs/SCALING.md) and the model each browser tab talks to.
    remotes: RemoteEngines = field(default_factory=RemoteEngines)
    chosen: SessionChoices = field(default_factory=SessionChoices)
    usage: UsageCounter = field(default_factory=UsageCounter)  # API tokens per key, for the admin
    steer: SteerService | None = None  # control vectors: training and the perplexity check (webui/steer/)
    # Documents: per-user and per-key stores, the embedding model, indexing jobs (webui/documents/)
    documents: DocumentService | None = None
    tools: ToolRegistry | None = None  # tools the chat may run (webui/tools/); None: none
    inspect: InspectService | None = None  # the Inspect tab's logit lens (webui/inspect/)
    # Every model in memory, this one's and others loaded on demand (webui/resident.py)
    resident: ResidentModels | None = None

    # -- models ------------------------------------------------------------------
    def saved_model_settings(self, name: object) -> ModelSettings:
        return self.model_settings.get(name) if is_plain_name(name) else ModelSettings()

    def load_model(
        self, name: object, choice: ModelSettings | None = None, timeout: float | None = None, save: bool = True,
        manager: ModelManager | None = None,
    ) -> tuple[LoadedModel, str | None]:
        """Load `name` with its saved settings, updated by `choice`; remember the result.
        `manager`: a resident slot other than the Runtime's own (webui/resident.py).

        Returns the model and a warning when the settings could not be saved.
        """
        folder = pick(name, self.models.available(), "model")
        if self.models.registry.for_folder(folder).name == "llama.cpp":
            refuse_while_building(self.settings.user_data_dir)  # "being built", not "not installed"
        wanted = self.saved_model_settings(name)
        if choice is not None:
            wanted = wanted.merged(choice)
        try:
            template = self.templates.load(wanted.chat_template)
        except SettingsError as exc:
            raise LoadError(str(exc)) from exc

        def adjust(loaded: LoadedModel) -> None:
            if wanted.context_length:
                loaded.context_length = min(loaded.context_length, wanted.context_length)
            if template is not None:
                loaded.tokenizer.chat_template = template

        manager = manager or self.models
        loaded = manager.load(name, overrides=wanted.load_overrides(), timeout=timeout, adjust=adjust)
        if manager is self.models and self.resident is not None:
            self.resident.drop_copy(loaded.name)
        return loaded, self.model_settings.save(loaded.name, wanted) if save else None

    # -- models on demand (webui/resident.py) --------------------------------------------
    def may_load(self, owner: bool) -> bool:
        """Whether a request naming a listed model that is not loaded may load it: anyone's
        with load-on-demand on, else only the owner's (the admin key, the first user)."""
        return owner or self.settings.loads_on_demand

    def resident_model(self, name: str, owner: bool) -> LoadedModel | None:
        """The model `name` in memory, loaded now (blocking) if it is listed and this caller
        may load it; None when the listing has no such model.  LoadRefused, DoesNotFit."""
        found = self.resident.ensure(name, self.may_load(owner))
        return None if found is None else found.loaded

    def fit_need(self, name: str, held: int = 0) -> tuple[int, str | None]:
        """(bytes the listed model `name` needs with its saved settings, why it cannot load
        here or None): Will it fit?'s numbers, counting `held` resident bytes as free."""
        folder = pick(name, self.models.available(), "model")
        wanted = self.saved_model_settings(name)
        loader = self.models.registry.for_folder(folder)
        options = self.models.options_for(wanted.load_overrides(), loader)
        memory = Memory.detect()
        if loader.name == "llama.cpp":
            refuse_while_building(self.settings.user_data_dir)  # its reader comes with the build
            from webui.loaders.gguf_files import choose_file, projector_file, read_info, total_bytes
            from webui.loaders.gguf_loader import DEFAULT_MAX_CONTEXT, cache_type_problem

            chosen = choose_file(folder, options.gguf_file, room=memory.ram + held)
            info = read_info(chosen)
            context = options.n_ctx or min(info.context_length, DEFAULT_MAX_CONTEXT)
            if wanted.context_length:
                context = min(context, wanted.context_length)
            projector = projector_file(folder)
            need = gguf_estimate(info, context, options.n_gpu_layers, options.cache_type,
                                 total_bytes(projector) if projector else 0)
            problem = cache_type_problem(options, info)
            if problem is None and need.ram > memory.ram + held:
                problem = f"❌ does not fit in RAM ({gib(need.ram)} needed, {gib(memory.ram + held)} free)"
            return need.gpu + need.ram, problem
        _shape, chosen, cpu = transformers_estimate(folder, options, wanted.context_length, memory)
        said = verdict(chosen.need, Memory(memory.gpus, memory.ram + held), cpu)
        return chosen.need, said if said.startswith("❌") else None

    def resident_budget(self, held: int) -> int:
        """Bytes the resident models may take together: --max-resident-gib, else the memory
        free now plus what the residents hold."""
        if self.settings.max_resident_gib:
            return int(self.settings.max_resident_gib * GIB)
        memory = Memory.detect()
        return memory.ram + sum(free for _, free in memory.gpus) + held

    def gguf_file_choices(self, name: object) -> list[tuple[str, str]]:
        """The Model tab's gguf-file choices for a listed model: (label, file) for each
        GGUF file of a folder entry, after the default ("" = the largest that fits)."""
        choices = [("the largest that fits", "")]
        try:
            folder = pick(name, self.models.available(), "model")
        except NameRefused:
            return choices
        if not folder.is_dir() or self.models.registry.for_folder(folder).name != "llama.cpp":
            return choices
        from webui.loaders.gguf_files import gguf_files, total_bytes

        return choices + [(f"{file} ({gib(total_bytes(path))})", file) for file, path in gguf_files(folder).items()]

    def fit_report(self, name: object, choice: ModelSettings | None = None) -> str:
        """"Will it fit?" for a listed model with the given (or saved) settings."""
        folder = pick(name, self.models.available(), "model")
        wanted = self.saved_model_settings(name)
        if choice is not None:
            wanted = wanted.merged(choice)
        loader = self.models.registry.for_folder(folder)
        options = self.models.options_for(wanted.load_overrides(), loader)
        if loader.name == "llama.cpp":
            return gguf_fit_report(folder, options, wanted.context_length)
        memory = Memory.detect()
        shape, chosen, cpu = transformers_estimate(folder, options, wanted.context_length, memory)
        return report(shape, chosen, memory, cpu, cpu_flags())

    def stream(
        self, owner: str, prompt: str | Callable[[Any, int], Any], params: SamplingParams,
        logprobs: int | None = None, state: dict[str, Any] | None = None, who: str | None = None,
        model: str | None = None, token_detail: bool = False,
    ) -> OwnedStream:
        """Queue a request for `owner` (whose Stop ends it); `who` is whom the scheduler
        is fair between (a user, the API key), by default the owner itself.  `model` picks
        the model by name (the API's `model` field); by default the one the owner's
        browser tab chose, else the local one."""
        name = model if model is not None else self.chosen.get(owner)
        engine = self.engine_for(name)
        lent = self.models.lent_for
        if engine is self.engine and lent is not None:
            # Refused, not queued: a training run can take hours (docs/TRAINING.md).
            raise QueueFull(f"{lent} is in progress: the model does not answer until it ends")
        done = self._on_done(owner, engine, name)
        token = self.requests.start(owner)
        try:
            stream = engine.generate(GenerationRequest(prompt, params, token, logprobs, state, owner=who or owner,
                                                       token_detail=token_detail))
        except QueueFull:
            self.requests.finish(owner, token)
            raise
        return OwnedStream(stream, lambda: done(token))

    def _on_done(self, owner: str, engine: Any, name: str | None) -> Callable[[CancelToken], None]:
        """What a request's end does: leave ActiveRequests, and start its model's idle time."""
        if engine is self.engine:
            loaded = self.models.current
            name = loaded.name if loaded else None

        def done(token: CancelToken) -> None:
            self.requests.finish(owner, token)
            if self.resident is not None and isinstance(engine, GenerationEngine):
                self.resident.finished(name)
        return done

    def stream_many(
        self, owner: str, prompt: Any, choices: list[SamplingParams], logprobs: int | None = None,
        who: str | None = None, model: str | None = None,
    ) -> list[OwnedStream]:
        """One prompt with several sets of values (an API request's `n` choices), queued
        together so that the engine admits them at the same step and decodes them as one
        batch; all are queued or none (QueueFull)."""
        name = model if model is not None else self.chosen.get(owner)
        engine = self.engine_for(name)
        lent = self.models.lent_for
        if engine is self.engine and lent is not None:
            raise QueueFull(f"{lent} is in progress: the model does not answer until it ends")
        done = self._on_done(owner, engine, name)
        tokens = [self.requests.start(owner) for _ in choices]
        try:
            streams = engine.generate_many([
                GenerationRequest(prompt, params, token, logprobs, owner=who or owner)
                for params, token in zip(choices, tokens, strict=True)])
        except QueueFull:
            for token in tokens:
                self.requests.finish(owner, token)
            raise
        return [OwnedStream(stream, lambda token=token: done(token))
                for stream, token in zip(streams, tokens, strict=True)]

    def stop(self, owner: str) -> int:
        return self.requests.stop(owner)

    def embed(self, owner: str, inputs: list[list[int]], model: str | None = None, who: str | None = None):
        """Pooled hidden states ([len(inputs), hidden]) of the local model for token ids,
        computed on the engine's model thread after the requests queued before (blocks;
        Stop for `owner` drops it while it waits).  Remote engines' models are refused."""
        engine = self.engine_for(model)
        if not isinstance(engine, GenerationEngine):
            raise EmbeddingsUnsupported(
                f"the model '{model}' is served by remote engine {engine.engine.name}; embeddings are computed "
                "only by the local model", param="model")
        token = self.requests.start(owner)
        try:
            return engine.embed(inputs, who or owner, token).result()
        finally:
            self.requests.finish(owner, token)

    def ignored_samplers(self, owner: str) -> tuple[str, tuple[str, ...]] | None:
        """The model `owner` (a browser tab's session) talks to, named with its backend,
        and the sampling fields that backend does not honour; None with no model.  The
        API refuses those fields by name; the Parameters tab marks them."""
        found = self._chosen_capabilities(owner)
        if found is None:
            return None
        who, capabilities = found
        return who, tuple(capabilities.ignores(set(SamplingParams.model_fields)))

    def determinism_note(self, owner: str) -> str | None:
        """What a greedy or seeded reply may depend on with the model `owner` talks to."""
        found = self._chosen_capabilities(owner)
        return None if found is None else found[1].determinism_note()

    def _chosen_capabilities(self, owner: str):
        """(the chosen model named with its backend, that backend's Capabilities), or None."""
        name = self.chosen.get(owner)
        loaded = self.models.current
        if name is None or (loaded is not None and name == loaded.name):
            if loaded is None or loaded.backend is None:
                return None
            return f"{loaded.name} ({loaded.loader})", loaded.backend.capabilities
        resident = self.resident.find(name) if self.resident is not None else None
        if resident is not None and resident.loaded is not None and resident.loaded.backend is not None:
            return f"{name} ({resident.loaded.loader})", resident.loaded.backend.capabilities
        remote = self.remotes.model(name)
        if remote is None:
            return None
        return f"{name} (remote engine {remote.engine.name}, {remote.engine.config.kind})", remote.capabilities

    # -- token probabilities (the token views: webui/ui/token_view.py) ------------------
    def token_probabilities_refused(self, owner: str) -> str | None:
        """Why the model `owner` talks to cannot report token probabilities; None if it can."""
        try:
            target = self.engine_for(self.chosen.get(owner))
        except GenerationError as exc:  # the model this tab chose is gone
            return str(exc)
        if isinstance(target, RemoteModel):
            # The views show the model's own distribution beside the sampled one; an engine
            # reports only the sampled one (the API's logprobs pass that through).
            return (f"token probabilities are not available for {target.name}: its remote engine "
                    "does not report the model's own distribution")
        loaded = self.models.current
        if loaded is None:
            return "no model is loaded; pick one in the Model tab"
        if loaded.backend is not None and not loaded.backend.capabilities.logprobs:
            return f"token probabilities are not available for {loaded.name}: its loader does not report them"
        return None

    def next_tokens(self, owner: str, text: str, params: SamplingParams, top: int,
                    user: str | None = None) -> TokenLogprob:
        """The likeliest next tokens after `text`, under the model alone and after the
        samplers of `params`: a one-token request through the engine (so the model runs
        on its thread, in its turn), whose record carries both distributions."""
        refused = self.token_probabilities_refused(owner)
        if refused:
            raise GenerationError(refused)
        one = make_params({"max_new_tokens": 1, "stop": ()}, base=params)
        stream = self.stream(owner, text, one, logprobs=top, token_detail=True, who=ui_party(user, owner))
        for _ in stream:
            pass
        if not stream.logprobs:
            raise GenerationError("no next token was computed (the request was stopped)")
        return stream.logprobs[0]

    def engine_for(self, model: str | None) -> GenerationEngine | RemoteModel:
        """The local engine for the loaded model (or no name), a remote engine's model for a
        name one of them serves; the local model wins a name both have."""
        loaded = self.models.current
        if model is None or (loaded is not None and model == loaded.name):
            return self.engine
        other = self.resident.engine_for(model) if self.resident is not None else None
        if other is not None:
            self.resident.touch(model)
            return other
        remote = self.remotes.model(model)
        if remote is None:
            raise ModelNotServed(f"the model '{model}' is neither loaded here nor served by a remote engine",
                                 param="model")
        return remote

    # -- extensions --------------------------------------------------------------------

    def extension_state(self, params: SamplingParams, mode: str = "notebook", **extra: Any) -> dict[str, Any]:
        """The Text Generation WebUI-shaped `state` dict extensions receive."""
        loaded = self.models.current
        return make_state(params, mode=mode, context_length=loaded.context_length if loaded else 0, **extra)

    def generate(self, owner: str, prompt: str, params: SamplingParams, *, is_chat: bool = False,
                 state: dict[str, Any] | None = None, user: str | None = None,
                 token_view: int | None = None) -> ReplyStream:
        """A plain-prompt reply through the extension hooks (see webui/extensions/reply.py).

        state_modifier may change the sampling values; they are validated like any
        others, and a state that fails is the extension's fault, not the request's.
        token_view: record each token's probabilities with this many alternatives
        (the reply's `logprobs` afterwards).
        """
        loaded = self.models.current
        context = loaded.context_length if loaded else 0
        if state is None:
            state = self.extension_state(params, "chat" if is_chat else "notebook", user=user)
        state = dict(state)
        original = prompt
        if not is_chat:
            state = self.extensions.state(state, validate=lambda s: params_from_state(s, params, context))
            params = params_from_state(state, params, context)
            prompt = self.extensions.input(prompt, state, False)
        return ReplyStream(
            self.extensions, lambda: self.stream(owner, prompt, params, state=state, logprobs=token_view,
                                                 token_detail=token_view is not None, who=ui_party(user, owner)),
            prompt=prompt, original=original, seed=params.seed, state=state, stop=params.stop, is_chat=is_chat,
        )

    def reload_extensions(self, names: Sequence[str]) -> ExtensionHost:
        """Load `names` (already checked against discovery) afresh, for a UI restart.

        Hooks switch to the new set at once; loaders already registered stay (a
        loader cannot be taken out from under a loaded model) until the process restarts.
        """
        old = self.extensions
        old_notes = set(old.warnings) | {f.summary() for f in old.startup_faults}
        self.settings = self.settings.model_copy(update={"extensions": tuple(names)})
        host = build_extensions(self.settings)
        host.register_loaders(self.models.registry)
        self.extensions = host
        self.engine.extensions = host
        for resident in self.resident.entries() if self.resident is not None else ():
            resident.engine.extensions = host
        self.warnings = [w for w in self.warnings if w not in old_notes]
        self.warnings += host.warnings + [fault.summary() for fault in host.startup_faults]
        return host

    def token_count(self, text: str) -> int:
        """Tokens in `text`: an extension's custom_tokenized_length, else the model's tokenizer."""
        custom = self.extensions.tokenized_length(text)
        if custom is not None:
            return custom
        loaded = self.models.current
        if loaded is None:
            raise GenerationError("no model is loaded")
        return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def with_model_defaults(self, params: SamplingParams) -> SamplingParams:
        """`params` updated with the loaded model's generation_config.json values."""
        loaded = self.models.current
        return make_params(model_defaults(loaded.folder), base=params) if loaded else params

    def remember(self, params: SamplingParams, username: str | None = None) -> str | None:
        """Save the last used values into the user's settings.yaml (the server's own
        for the first user); returns a warning, if any."""
        path = self.users.get(username).settings_file
        return save_yaml_key(path, "sampling", preset_delta(params), "last used values")

    def remembered(self, username: str | None = None) -> SamplingParams:
        """The user's last used values, or the start-up values when they have none."""
        try:
            values = read_yaml_mapping(self.users.get(username).settings_file).get("sampling")
            return make_params(values) if isinstance(values, dict) else self.default_params
        except (SettingsError, ParamsError, OSError):
            return self.default_params

    def save_setting(self, key: str, value: Any, what: str) -> str | None:
        """Rewrite one key of the server's settings.yaml; returns a warning, if any."""
        return save_yaml_key(self.settings.settings_file, key, value, what)


def save_yaml_key(path: Path, key: str, value: Any, what: str) -> str | None:
    """Rewrite one key of a YAML settings file atomically; returns a warning, if any.

    Other keys are kept; a file we cannot parse is left alone rather than overwritten.
    """
    try:
        data = read_yaml_mapping(path) if path.exists() else {}
    except SettingsError as exc:
        return f"{what} not saved: {exc}"
    data[key] = value
    try:
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    except OSError as exc:
        return f"{what} not saved: {exc.strerror or exc}"
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
        return self._stream.logprobs

    @property
    def prompt_tokens(self) -> int:
        return self._stream.prompt_tokens

    @property
    def new_tokens(self) -> int:
        return self._stream.new_tokens

    @property
    def thinking(self):
        """The reply's thinking markers (None: it does not think); set before its first piece."""
        return getattr(self._stream, "thinking", None)

    def __iter__(self):
        return (piece for piece in self.updates() if isinstance(piece, str))

    def admitted(self, timeout: float | None = None) -> None:
        """Block until the engine admits the request or ends it; raise the AppError it ended with."""
        self._stream.admitted(timeout)

    def updates(self):
        """Text pieces, and Waiting(ahead) while the request is queued."""
        try:
            yield from self._stream.updates()
        finally:
            self._on_done()

    def cancel(self) -> None:
        """Abandon a stream that will never be read: the request stops within a step."""
        self._stream.request.cancel.cancel()
        self._on_done()


def transformers_estimate(folder: Path, options: Any, context_length: int | None, memory: Memory):
    """(shape, Will it fit?'s estimate, on the CPU?) for a Transformers folder with these options."""
    shape = read_shape(folder, trust_remote_code=options.trust_remote_code)
    context = min(context_length or shape.context_length, shape.context_length)
    cpu = options.cpu or not memory.gpus
    chosen = estimate(shape, context, dtype=options.dtype, cpu=cpu, load_in_8bit=options.load_in_8bit,
                      load_in_4bit=options.load_in_4bit, use_double_quant=options.use_double_quant,
                      cpu_int8=options.cpu_int8, flags=cpu_flags(), fbgemm=fbgemm_fp16_ready(),
                      cpu_memory=options.cpu_memory, disk=options.disk)
    return shape, chosen, cpu


def gguf_fit_report(entry: Path, options: Any, context_length: int | None) -> str:
    """"Will it fit?" for a GGUF file or folder (the file the loader would pick)."""
    from webui.fit import available_ram
    from webui.loaders.gguf_files import choose_file, gguf_files, projector_file, read_info, total_bytes
    from webui.loaders.gguf_loader import DEFAULT_MAX_CONTEXT, cache_type_problem, gpu_offload_built

    chosen = choose_file(entry, options.gguf_file, room=available_ram())
    info = read_info(chosen)
    context = options.n_ctx or min(info.context_length, DEFAULT_MAX_CONTEXT)
    if context_length:
        context = min(context, context_length)
    text = gguf_report(info, context, options.n_gpu_layers, options.cache_type, Memory.detect(), gpu_offload_built(),
                       projector_file(entry))
    problem = cache_type_problem(options, info)
    if problem:
        text += f"\n\n❌ will not load: {problem}"
    files = gguf_files(entry) if entry.is_dir() else {}
    if len(files) > 1:  # the names to type into gguf-file, split models counted whole
        rows = [f"| `{name}` | {gib(total_bytes(path))} | {'← this one' if path == chosen else ''} |"
                for name, path in files.items()]
        text += "\n\n| files in this folder (gguf-file) | size | |\n|---|---|---|\n" + "\n".join(rows)
    return text


def load_options(settings: Settings) -> LoaderSettings:
    """The start-up value of every loader option (command line over settings.yaml), the
    offload folder resolved; each model may override the ones its schema lets it."""
    values = {name: getattr(settings, name) for name in LoaderSettings.model_fields}
    return LoaderSettings(**{**values, "disk_cache_dir": settings.offload_dir})


def serving_options(settings: Settings) -> ServingOptions:
    """How the Transformers backend batches, from --max-batch and friends."""
    return ServingOptions(
        max_batch=settings.max_batch,
        prefix_cache_bytes=int(settings.prefix_cache_gib * GIB),
        kv_budget_bytes=int(settings.max_kv_gib * GIB) if settings.max_kv_gib else None,
        prefill_chunk=settings.prefill_chunk,
        prompt_lookup=settings.prompt_lookup,
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
    notes = list(warnings or [])
    stale = remove_stale_temporaries(settings.user_data_dir)
    if stale:
        log.info("removed %d unfinished temporary files from an earlier run", stale)
    extensions = build_extensions(settings)
    registry = registry or default_registry(serving_options(settings))
    extensions.register_loaders(registry)
    notes += extensions.warnings + [fault.summary() for fault in extensions.startup_faults]
    models = ModelManager(settings.model_dir, registry, load_options(settings), lora_dir=settings.lora_dir)
    presets = PresetLibrary(settings.presets_dir, settings.user_data_dir / "presets")
    try:
        default_params = presets.load(settings.preset)
    except (NameRefused, ParamsError) as exc:
        notes.append(f"preset {settings.preset!r} not used: {exc}")
        default_params = SamplingParams()
    owners = [user for user, _ in settings.auth_pairs()] if settings.has_auth else []
    vectors = VectorLibrary(settings.user_data_dir / "control-vectors")
    runtime = Runtime(
        settings=settings,
        models=models,
        engine=GenerationEngine(models, max_pending=settings.max_queue, extensions=extensions,
                                per_owner=settings.max_batch_per_user,
                                vectors=vectors),
        presets=presets,
        default_params=default_params,
        users=UserSpaces(settings.user_data_dir, owner=owners[0] if owners else None),
        templates=TemplateLibrary(settings.user_data_dir / "instruction-templates"),
        model_settings=ModelSettingsStore(settings.user_data_dir),
        downloads=Downloader(settings.model_dir),
        training=TrainingService(models, settings.user_data_dir),
        steer=SteerService(models, vectors),
        warnings=notes,
        extensions=extensions,
        remotes=RemoteEngines(settings.all_remote_engines()),
        # Nothing is read or started until the chat first asks for its tools.
        tools=ToolRegistry(settings.user_data_dir, owner=owners[0] if owners else None,
                           multi_user=settings.has_auth, web=web_tools(settings)),
    )
    runtime.inspect = InspectService(models)
    runtime.documents = DocumentService(settings.model_dir, settings.user_data_dir, runtime.users)
    runtime.resident = ResidentModels(
        models, runtime.engine, listing=models.available,
        load=lambda manager, name: runtime.load_model(name, save=False, manager=manager),
        new_manager=lambda: ModelManager(settings.model_dir, registry, load_options(settings),
                                         lora_dir=settings.lora_dir),
        new_engine=lambda manager: GenerationEngine(manager, max_pending=settings.max_queue,
                                                    extensions=runtime.extensions,
                                                    per_owner=settings.max_batch_per_user),
        measure=runtime.fit_need, budget=runtime.resident_budget,
        idle_seconds=settings.idle_unload_minutes * 60 if settings.idle_unload_minutes else None)
    if settings.idle_unload_minutes:
        runtime.resident.start_sweeping()
    runtime.warnings += runtime.remotes.warnings
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


def build_extensions(settings: Settings) -> ExtensionHost:
    """Discover what is installed, then load the configured extensions in order."""
    available, notes = discover(settings.extensions_dir, settings.user_data_dir / "extensions")
    return load_extensions(settings.extensions, available, settings.extension_params, notes)
