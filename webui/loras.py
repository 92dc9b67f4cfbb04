"""LoRA adapters (peft) on the loaded Transformers model: list, apply one or more, remove.

Adapters live in user_data/loras/<name>/ as peft saves them (adapter_config.json and
adapter_model.safetensors).  Applying wraps the model in a PeftModel with every chosen
adapter active at once; removing takes the LoRA layers out again (not merged), so the
base weights are exactly as loaded.  Callers hold the model lock (ModelManager).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from webui.loaders.base import LoadedModel, LoadError
from webui.loaders.hf_transformers import check_safetensors
from webui.paths import list_entries


def available(lora_dir: Path) -> dict[str, Path]:
    """Adapter folders: sub-folders of `lora_dir` holding an adapter_config.json."""
    return {name: path for name, path in list_entries(lora_dir, dirs=True).items()
            if (path / "adapter_config.json").is_file()}


def preflight(name: str, folder: Path, allow_pickle: bool) -> None:
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        check_safetensors(weights)
    elif not (allow_pickle and (folder / "adapter_model.bin").is_file()):
        raise LoadError(f"LoRA {name}: no adapter_model.safetensors (pickle adapters need --allow-pickle)")


def apply(loaded: LoadedModel, adapters: Mapping[str, Path], allow_pickle: bool = False) -> None:
    """Replace the applied adapters with `adapters` (name -> folder), all active together.

    On failure the model is left with no adapter at all, and LoadError says why.
    """
    if loaded.loader != "transformers":
        raise LoadError("LoRA adapters need a model loaded with the Transformers loader")
    for name, folder in adapters.items():
        preflight(name, folder, allow_pickle)
    remove(loaded)
    if not adapters:
        return
    from peft import PeftConfig, PeftModel

    names = list(adapters)
    base = loaded.model
    model = None
    try:
        # PeftModel.from_pretrained in two steps, so that a failure while loading the
        # weights (an adapter made for another model) leaves a handle to clean up with.
        config = PeftConfig.from_pretrained(adapters[names[0]])
        config.inference_mode = True
        model = PeftModel(base, config, adapter_name=names[0])
        for name in names:
            model.load_adapter(adapters[name], adapter_name=name, is_trainable=False)
        # LoraModel (not PeftModel) takes a list: every chosen adapter adds its delta.
        model.base_model.set_adapter(names)
        model.eval()
    except Exception as exc:  # a mismatched adapter is a message, never a crash
        loaded.model = model.unload() if model is not None else base
        loaded.loras = ()
        raise LoadError(f"LoRA {', '.join(names)}: {exc.__class__.__name__}: {exc}") from exc
    loaded.model = model
    loaded.loras = tuple(names)


def remove(loaded: LoadedModel) -> None:
    """Take every LoRA layer out (peft's unload: the base weights are not merged)."""
    from peft import PeftModel

    if isinstance(loaded.model, PeftModel):
        loaded.model = loaded.model.unload()
    loaded.loras = ()
