"""Where training reads and writes, under the user-data folder, and the listings that
every name from a browser or the command line is checked against (webui/paths.py).

    user_data/training/datasets/   .txt raw text, .json / .jsonl instruction records
    user_data/training/formats/    Text Generation WebUI format files (.json)
    user_data/training/checkpoints/NAME/checkpoint-STEP/   what Stop and resume use
    user_data/training/perplexity.json                     the evaluation results table
    user_data/loras/NAME/          the finished adapter (the Model tab applies it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webui.paths import is_plain_name

DATASET_SUFFIXES = (".txt", ".json", ".jsonl")


@dataclass(frozen=True)
class TrainingFolders:
    user_data: Path

    @property
    def root(self) -> Path:
        return self.user_data / "training"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def formats(self) -> Path:
        return self.root / "formats"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def loras(self) -> Path:
        return self.user_data / "loras"

    @property
    def results(self) -> Path:
        return self.root / "perplexity.json"

    def dataset_files(self, suffixes: tuple[str, ...] = DATASET_SUFFIXES) -> dict[str, Path]:
        """Data files by their whole file name ("notes.txt"), so that notes.txt and
        notes.json are two entries rather than one hiding the other."""
        return _files(self.datasets, suffixes)

    def format_files(self) -> dict[str, Path]:
        return {path.stem: path for path in _files(self.formats, (".json",)).values() if is_plain_name(path.stem)}

    def run_folder(self, name: str) -> Path:
        """The checkpoint folder of the run that makes adapter `name` (a checked plain name)."""
        return self.checkpoints / name


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {entry.name: entry for entry in sorted(folder.iterdir())
            if entry.is_file() and entry.suffix in suffixes and is_plain_name(entry.name)}
