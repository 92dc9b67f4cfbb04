"""Training and perplexity for the Runtime, the Training tab and the command line.

Everything is checked before the model is touched: the names against the folders'
listings (webui/paths.py), the model, the window against the context, the data file
(tokenized in full, so a malformed record is found now and not an hour in).  Then
the run borrows the model (ModelManager.lend): running requests finish, new ones are
refused with "training NAME is in progress" until the run gives the model back, LoRAs
that were applied included.  One run at a time, on its own thread; the page polls
`status()`.
"""

from __future__ import annotations

from webui.errors import AppError

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from webui import loras
from webui.loaders.base import LoadedModel, LoadError
from webui.model_manager import ModelLent, ModelManager, NoModelLoaded
from webui.paths import NameRefused, list_entries, new_entry, pick
from webui.storage import atomic_write_text
from webui.training.datasets import DatasetError, Example, build_examples, read_text
from webui.training.folders import TrainingFolders
from webui.training.perplexity import Result, ResultsError, ResultsTable, perplexity, today
from webui.training.progress import BackgroundJob, Progress, Snapshot
from webui.training.settings import TrainingSettings
from webui.training.trainer import SETTINGS_FILE, last_checkpoint, train

log = logging.getLogger(__name__)

SAMPLE_NAME = "sample-kjv-heldout"  # no file suffix: never the same as a user's file name
SAMPLE_FILE = Path(__file__).parent / "samples" / "kjv-heldout.txt"


class TrainingError(AppError, ValueError):
    """A training or evaluation request that cannot go ahead, with the reason."""


@dataclass(frozen=True)
class Plan:
    settings: TrainingSettings
    model: str
    examples: list[Example]
    resume_from: int  # the checkpoint step, 0 for a fresh run


class TrainingService(BackgroundJob):
    def __init__(self, models: ModelManager, user_data: Path):
        self.models = models
        self.folders = TrainingFolders(user_data)
        self.results = ResultsTable(self.folders.results)
        self._lock = threading.Lock()
        self._progress = Progress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- listings ----------------------------------------------------------------------
    def datasets(self) -> list[str]:
        return list(self.folders.dataset_files())

    def formats(self) -> list[str]:
        return list(self.folders.format_files())

    def texts(self) -> dict[str, Path]:
        """What perplexity can be measured on: the bundled sample and the .txt data files."""
        return {SAMPLE_NAME: SAMPLE_FILE, **self.folders.dataset_files((".txt",))}

    def unfinished(self) -> list[str]:
        """Runs that were stopped or cut short and can be resumed."""
        folder = self.folders.checkpoints
        entries = list_entries(folder, dirs=True) if folder.is_dir() else {}
        return sorted(name for name in entries if self._resumable(name))

    def _resumable(self, name: str) -> bool:
        return (name not in loras.available(self.folders.loras)
                and last_checkpoint(self.folders.run_folder(name)) is not None
                and (self.folders.run_folder(name) / SETTINGS_FILE).is_file())

    # -- checks ------------------------------------------------------------------------
    def plan(self, settings: TrainingSettings, resume: bool = False) -> Plan:
        """Check everything a run needs and tokenize its data; raise TrainingError (or
        NameRefused, NoModelLoaded, DatasetError) with the reason otherwise."""
        name = settings.lora_name
        new_entry(self.folders.loras, name, "", "LoRA")  # refuses a name that is no plain name
        if name in loras.available(self.folders.loras):
            raise TrainingError(f"a LoRA named {name} already exists in user_data/loras/: pick another name")
        run = self.folders.run_folder(name)
        checkpoint = last_checkpoint(run)
        if resume and checkpoint is None:
            raise TrainingError(f"{name} has no checkpoint to resume from")
        if not resume and checkpoint is not None:
            raise TrainingError(f"{name} has an unfinished run ({checkpoint.name}): resume it, or pick another name")
        data = pick(settings.dataset, self.folders.dataset_files(), "dataset")
        form = pick(settings.format, self.folders.format_files(), "format file") if settings.format else None
        if form is not None and data.suffix == ".txt":
            raise TrainingError("a format file applies to JSON instruction data, not to raw text")
        loaded = self._trainable()
        if settings.cutoff_len > loaded.context_length:
            raise TrainingError(f"cutoff_len {settings.cutoff_len} is longer than {loaded.name}'s context "
                                f"({loaded.context_length} tokens)")
        leaves = {module_name.rsplit(".", 1)[-1] for module_name, _ in loaded.model.named_modules()}
        missing = [m for m in settings.target_modules if m not in leaves]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in loaded.model.named_modules()
                             if type(m).__name__.startswith("Linear") and n != "lm_head"})
            raise TrainingError(f"{loaded.name} has no layers named {', '.join(missing)}; "
                                f"its linear layers: {', '.join(linear)}")
        examples = build_examples(loaded.tokenizer, data, settings.cutoff_len, settings.overlap, form)
        return Plan(settings, loaded.name, examples, int(checkpoint.name.split("-")[-1]) if resume else 0)

    def _trainable(self) -> LoadedModel:
        loaded = self.models.current
        if loaded is None:
            raise NoModelLoaded("no model is loaded: load the model to train in the Model tab")
        if loaded.loader != "transformers":
            raise TrainingError(f"LoRA training needs a model loaded with the Transformers loader; {loaded.name} is "
                                f"loaded with {loaded.loader}")
        if getattr(loaded.options, "load_in_8bit", False):
            raise TrainingError("training over an 8-bit base is not supported: load the model in 4-bit (QLoRA), "
                                "16-bit or 32-bit")
        if getattr(loaded.options, "cpu_int8", False):
            # Its Int8Linear layers are no nn.Linear: peft finds nothing to adapt.
            raise TrainingError("training over a cpu-int8 base is not supported: load the model in 16-bit or 32-bit")
        return loaded

    def saved_settings(self, name: object) -> TrainingSettings:
        """The settings an unfinished run started with (what resume uses)."""
        folder = pick(name, {n: self.folders.run_folder(n) for n in self.unfinished()}, "unfinished run")
        try:
            return TrainingSettings.model_validate_json((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"the saved settings of {folder.name} cannot be read ({exc.__class__.__name__})") from None

    # -- runs --------------------------------------------------------------------------
    def start(self, settings: TrainingSettings, resume: bool = False) -> Snapshot:
        """Check, then train on a thread of its own; returns at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ModelLent(f"training {self._progress.name} is already in progress")
            plan = self.plan(settings, resume)
            run = self.folders.run_folder(settings.lora_name)
            if not resume:
                atomic_write_text(run / SETTINGS_FILE, settings.model_dump_json(indent=2))
            self._stop.clear()
            self._progress = Progress(name=settings.lora_name)
            self._progress.set_state("preparing", f"waiting for running requests to finish; {len(plan.examples)} "
                                                  "examples")
            self._thread = threading.Thread(target=self._run, args=(plan, self._progress, resume),
                                            name="training", daemon=True)
            self._thread.start()
            return self._progress.snapshot()

    def resume(self, name: object) -> Snapshot:
        return self.start(self.saved_settings(name), resume=True)

    def stop(self) -> str:
        return self._request_stop("No training is running.", "Stopping: a checkpoint is saved at the end of this step.")

    def _run(self, plan: Plan, progress: Progress, resume: bool) -> None:
        settings = plan.settings
        try:
            with self.models.lend(f"training {settings.lora_name}") as loaded:
                if loaded.name != plan.model:
                    raise TrainingError(f"the model changed to {loaded.name} before training began")
                applied = loaded.loras
                loras.remove(loaded)  # a run trains the base model
                if loaded.backend is not None:
                    loaded.backend.clear_cache()  # its memory is the training's now
                try:
                    pad = loaded.tokenizer.pad_token_id
                    outcome = train(loaded.model, pad if pad is not None else 0, plan.examples, settings,
                                    self.folders.run_folder(settings.lora_name), progress, self._stop,
                                    cpu=loaded.device == "cpu", resume=resume,
                                    finished=self.folders.loras / settings.lora_name)
                finally:
                    if applied:
                        listing = loras.available(self.folders.loras)
                        loras.apply(loaded, {n: listing[n] for n in applied if n in listing})
            if outcome.stopped:
                progress.set_state("stopped", "checkpoint saved: resume to continue")
            else:
                # The adapter is published; its checkpoints (optimizer state included,
                # several times the adapter's size) have nothing left to resume.
                shutil.rmtree(self.folders.run_folder(settings.lora_name), ignore_errors=True)
                progress.set_state("done", f"saved to user_data/loras/{settings.lora_name}/")
        except (TrainingError, DatasetError, NameRefused, LoadError, ModelLent, NoModelLoaded) as exc:
            progress.set_state("failed", str(exc))
        except Exception as exc:  # the thread must end with a message, never silently
            log.exception("training %s failed", settings.lora_name)
            progress.set_state("failed", f"{exc.__class__.__name__}: {exc}")

    # -- perplexity --------------------------------------------------------------------
    def evaluate(self, data: object, context: int = 0, stride: int = 0,
                 on_window=None) -> tuple[Result, str | None]:
        """Perplexity of the loaded model (its LoRAs applied) on a listed text; the
        result is added to the table (or a warning says why it could not be).  The model
        does not serve meanwhile."""
        if not (isinstance(context, int) and isinstance(stride, int) and context >= 0 and stride >= 0):
            raise TrainingError("context and stride are whole numbers of tokens: 0 (automatic) or more")
        path = pick(data, self.texts(), "text")
        text = read_text(path)
        if not text.strip():
            raise DatasetError(f"{path.name}: the file is empty")
        with self.models.lend("perplexity evaluation") as loaded:
            if loaded.loader != "transformers":
                raise TrainingError("perplexity is measured on models loaded with the Transformers loader")
            context = min(context or loaded.context_length, loaded.context_length)
            stride = stride or context
            if stride > context:
                raise TrainingError(f"stride {stride} is longer than the context ({context})")
            ids = loaded.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            try:
                value, tokens = perplexity(loaded.model, ids, context, stride, loaded.device, on_window)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            quant = loaded.options.summary()
            result = Result(model=loaded.name, loader=loaded.loader,
                            dtype=f"{loaded.dtype} {quant}".strip(), loras=" + ".join(loaded.loras) or "none",
                            data=str(data), context=context, stride=stride, tokens=tokens,
                            perplexity=round(value, 4), date=today())
        try:
            self.results.add(result)
        except (ResultsError, OSError) as exc:
            return result, f"result not kept: {exc}"
        return result, None
