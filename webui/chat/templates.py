"""Instruction templates the user adds in user_data/instruction-templates/.

A template is a Jinja chat template, as a `.jinja` file or a Text Generation WebUI
`.yaml` file with an `instruction_template` key.  It is rendered in transformers'
sandbox like a model's own template.
"""

from __future__ import annotations

from pathlib import Path

from webui.paths import list_entries, pick
from webui.settings import MAX_YAML_BYTES, SettingsError, read_yaml_mapping

MODEL_TEMPLATE = "(model's own)"


class TemplateLibrary:
    def __init__(self, folder: Path):
        self.folder = folder

    def names(self) -> list[str]:
        return [MODEL_TEMPLATE, *self._listing()]

    def load(self, name: object) -> str | None:
        """The template text; None for the model's own template."""
        if name in (None, "", MODEL_TEMPLATE):
            return None
        path = pick(name, self._listing(), "instruction template")
        if path.suffix == ".jinja":
            if path.stat().st_size > MAX_YAML_BYTES:
                raise SettingsError(f"{path.name} is too large for a template")
            return path.read_text(encoding="utf-8")
        template = read_yaml_mapping(path).get("instruction_template")
        if not isinstance(template, str) or not template.strip():
            raise SettingsError(f"{path.name} has no 'instruction_template' text")
        return template

    def _listing(self) -> dict[str, Path]:
        return list_entries(self.folder, suffixes=(".jinja", ".yaml", ".yml"))
