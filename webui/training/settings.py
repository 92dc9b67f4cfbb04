"""TrainingSettings: every choice of a LoRA training run, in one validated schema.

The Training tab, the `train` command line (webui/training/cli.py derives its flags
from these fields) and the settings saved beside a finished adapter all use it.  The
4-bit base (QLoRA) is not a field here: it is the model's own load option
(`load_in_4bit`, webui/loaders/hf_options.py), so a model loaded in 4-bit trains as
QLoRA and nothing is declared twice.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webui.paths import is_plain_name

Scheduler = Literal["linear", "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "polynomial",
                    "inverse_sqrt"]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
DEFAULT_TARGETS = ("q_proj", "v_proj")


class TrainingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_name: str = Field(description="name of the new adapter: user_data/loras/NAME/")
    dataset: str = Field(description="file in user_data/training/datasets/ (.txt raw text; .json/.jsonl "
                                     "instruction records)")
    format: str | None = Field(None, description="for JSON data: a format file in user_data/training/formats/ "
                                                 "(Text Generation WebUI's); none: the model's chat template")
    rank: int = Field(32, ge=1, le=1024, description="LoRA rank (r)")
    alpha: int = Field(64, ge=1, le=4096, description="LoRA alpha (scale = alpha / rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: tuple[ModuleName, ...] = Field(
        DEFAULT_TARGETS, min_length=1, max_length=32,
        description="layer names to adapt, comma-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
    learning_rate: float = Field(3e-4, gt=0.0, le=1.0, allow_inf_nan=False, description="peak learning rate")
    scheduler: Scheduler = Field("linear", description="learning-rate schedule")
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="steps of linear warm-up")
    epochs: float = Field(3.0, gt=0.0, le=1000.0, allow_inf_nan=False,
                          description="passes over the data (ignored when steps is set)")
    steps: int | None = Field(None, ge=1, le=10_000_000, description="optimizer steps (overrides epochs)")
    micro_batch_size: int = Field(4, ge=1, le=1024, description="examples per forward pass")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="forward passes per optimizer step")
    cutoff_len: int = Field(256, ge=8, le=1 << 20, description="tokens per example (the window length for raw text)")
    overlap: int = Field(32, ge=0, le=1 << 20, description="raw text: tokens each window shares with the previous")
    save_steps: int = Field(50, ge=1, le=10_000_000, description="steps between checkpoints (what resume continues from)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for shuffling and LoRA initialisation")

    @field_validator("lora_name", "dataset")
    @classmethod
    def _plain(cls, value: str) -> str:
        # Whether it is listed (dataset) or free (lora_name) is checked against the folders.
        if not is_plain_name(value):
            raise ValueError("use letters, digits, spaces, '.', '-' or '_' (at most 128, no leading dot)")
        return value

    @field_validator("format")
    @classmethod
    def _plain_format(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_name(value):
            raise ValueError("not a format file name")
        return value

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # One parser for the flag, the tab's text box and the saved settings.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _window(self) -> TrainingSettings:
        if self.overlap >= self.cutoff_len:
            raise ValueError(f"overlap ({self.overlap}) must be shorter than cutoff_len ({self.cutoff_len})")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation * self.cutoff_len
