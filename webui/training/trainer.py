"""One LoRA training run on a model that has been lent to it: transformers' Trainer over
a peft LoRA wrapper.  (Trainer gives checkpoints that resume exactly, the optimizer,
the schedulers, accumulation and QLoRA for free; nothing here needed a loop of our own.)

The run wraps the model in place and always unwraps it again (peft's unload: the base
weights are untouched), so the model goes back to serving exactly as it was lent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.storage import atomic_write_text
from webui.training.datasets import IGNORE, Example
from webui.training.progress import Progress
from webui.training.settings import TrainingSettings

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # transformers writes it last: its presence marks a whole checkpoint
SETTINGS_FILE = "training_settings.json"
LOSS_FILE = "training_log.json"


@dataclass(frozen=True)
class Outcome:
    step: int
    max_steps: int
    stopped: bool
    losses: tuple[tuple[int, float], ...]


class Examples(torch.utils.data.Dataset):
    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


class Collator:
    """Pads a micro-batch on the right and counts its real tokens for tokens/s."""

    def __init__(self, pad_id: int, progress: Progress):
        self.pad_id = pad_id
        self.progress = progress

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example["input_ids"])
            ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example["labels"])
            mask[row, :n] = 1
        self.progress.add_tokens(int(mask.sum()))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def last_checkpoint(run_folder: Path) -> Path | None:
    """The newest complete checkpoint: one whose trainer state was written and parses
    (a kill during a save leaves a newer folder without it; that one is skipped)."""
    if not run_folder.is_dir():
        return None
    found = []
    for entry in run_folder.iterdir():
        step = entry.name.removeprefix(CHECKPOINT_PREFIX)
        if entry.is_dir() and entry.name.startswith(CHECKPOINT_PREFIX) and step.isdigit():
            try:
                json.loads((entry / STATE_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            found.append((int(step), entry))
    return max(found)[1] if found else None


def losses_of(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(entry["step"]), float(entry["loss"])) for entry in log_history if "loss" in entry and "step" in entry]


def _callback(progress: Progress, stop: threading.Event):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.begin(state.global_step, state.max_steps, losses_of(state.log_history))

        def on_step_end(self, args, state, control, **kwargs):
            progress.step(state.global_step)
            if stop.is_set():
                # Stop = a checkpoint at this step, then out: resume continues from here.
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress.step(state.global_step, float(logs["loss"]))

    return ProgressCallback()


def lora_config(settings: TrainingSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM")


def train(model: Any, pad_id: int, examples: list[Example], settings: TrainingSettings, run_folder: Path,
          progress: Progress, stop: threading.Event, *, cpu: bool, resume: bool,
          finished: Path | None = None) -> Outcome:
    """Train a LoRA on `model` (wrapped in place, unwrapped before returning).

    With `resume`, continue from the newest complete checkpoint in `run_folder`.  When
    the run completes (not stopped), the adapter, its settings and its loss history are
    published at `finished` in one rename (a reader sees all of it or nothing).
    """
    from peft import get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments

    checkpoint = last_checkpoint(run_folder) if resume else None
    torch.manual_seed(settings.seed)  # the LoRA's initial weights
    peft_model = get_peft_model(model, lora_config(settings))
    try:
        args = TrainingArguments(
            output_dir=str(run_folder),
            per_device_train_batch_size=settings.micro_batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation,
            learning_rate=settings.learning_rate,
            lr_scheduler_type=settings.scheduler,
            warmup_steps=settings.warmup_steps,
            num_train_epochs=settings.epochs,
            max_steps=settings.steps or -1,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="steps",
            save_steps=settings.save_steps,
            save_total_limit=2,  # the newest, and the one before in case the newest is cut short
            seed=settings.seed,
            use_cpu=cpu,
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,  # the collator counts tokens in this process
            remove_unused_columns=False,
            label_names=["labels"],
        )
        trainer = Trainer(model=peft_model, args=args, train_dataset=Examples(examples),
                          data_collator=Collator(pad_id, progress), callbacks=[_callback(progress, stop)])
        trainer.remove_callback(PrinterCallback)  # progress goes to `progress`, not to stdout as dicts
        if checkpoint is not None:
            log.info("resuming %s from %s", settings.lora_name, checkpoint.name)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        state = trainer.state
        losses = tuple(losses_of(state.log_history))
        outcome = Outcome(state.global_step, state.max_steps, stop.is_set(), losses)
        if not outcome.stopped and finished is not None:
            progress.set_state("saving")
            publish(peft_model, settings, outcome, finished)
        return outcome
    finally:
        peft_model.unload()  # takes the LoRA layers out of `model` again
        model.eval()


def publish(peft_model: Any, settings: TrainingSettings, outcome: Outcome, folder: Path) -> None:
    """Save the adapter with its settings and loss history into a hidden sibling folder,
    then rename it to `folder`: a crash leaves no half adapter in the LoRA listing (the
    hidden name is not a plain name, so it is never listed)."""
    staging = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        peft_model.save_pretrained(str(staging), safe_serialization=True)
        atomic_write_text(staging / SETTINGS_FILE, settings.model_dump_json(indent=2))
        atomic_write_text(staging / LOSS_FILE, json.dumps(
            {"steps": outcome.step, "max_steps": outcome.max_steps,
             "losses": [list(pair) for pair in outcome.losses]}, indent=1))
        os.replace(staging, folder)  # refuses (OSError) if a folder of that name appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
