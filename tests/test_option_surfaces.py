"""Every place a loader option shows up is derived from the loaders' option schemas.

Each surface (flags, settings.yaml keys, per-model settings, the admin API's load
body, the Model tab's controls) is read back here and compared with the schemas: a
surface with an option the schemas lack, or lacking one they have, fails.
"""

from __future__ import annotations

import argparse
from typing import Literal

import gradio as gr
import pytest
import yaml
from pydantic import ValidationError

from tests.conftest import TINY
from webui.api.schemas import LoadRequest
from webui.cli import parse_flags, parser
from webui.loaders.base import LoadError
from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.loaders.gguf_options import LlamaCppOptions
from webui.loaders.hf_options import TransformersOptions
from webui.loaders.options import GiBList, LoaderOptions, add_flags, flat_model, merged_specs, option
from webui.loaders.registry import LoaderRegistry, default_registry
from webui.model_settings import ModelSettings, ModelSettingsStore
from webui.settings import LoaderSettings, Settings, SettingsError, build_settings
from webui.ui.loader_controls import OptionControls

SPECS = merged_specs(BUILTIN_SCHEMAS)
ALL = {spec.name for spec in SPECS}
PER_MODEL = {spec.name for spec in SPECS if spec.scope == "model"}
SHOWN = {spec.name for spec in SPECS if spec.scope in ("model", "command_line")}
MODEL_EXTRAS = {"context_length", "chat_template"}  # per-model, but not loader options


def group_actions(title: str) -> list[argparse.Action]:
    # argparse keeps each group's actions only on the private group object.
    group = next(g for g in parser()._action_groups if g.title == title)
    return list(group._group_actions)


def test_the_registry_exposes_the_schemas_the_settings_are_built_from():
    assert tuple(default_registry().schemas().values()) == BUILTIN_SCHEMAS
    assert default_registry().schemas()["transformers"] is TransformersOptions


def test_flags_are_exactly_the_schema_options_with_their_tgw_spellings():
    actions = group_actions("model")
    by_flag = {flag: action.dest for action in actions for flag in action.option_strings}
    assert set(by_flag) - {"--model", "--model-dir"} == {
        "--dtype", "--bf16", "--cpu", "--attn-implementation", "--load-in-8bit", "--load-in-4bit", "--cpu-int8", "--quant_type",
        "--use_double_quant", "--compute_dtype", "--gpu-split", "--cpu-memory", "--disk", "--disk-cache-dir",
        "--allow-pickle", "--trust-remote-code",
        # llama.cpp (GGUF)
        "--n-ctx", "--n-gpu-layers", "--threads", "--threads-batch", "--n_batch", "--tensor-split", "--flash-attn",
        "--cache-type", "--no-mmap", "--mlock", "--rope-freq-base", "--gguf-file",
    }
    assert set(by_flag.values()) - {"model", "model_dir"} == ALL
    for spec in SPECS:
        assert by_flag[spec.flag] == spec.name
    # No loader option is declared by hand in another group either.
    others = {a.dest for g in parser()._action_groups if g.title != "model" for a in g._group_actions}
    assert not others & ALL


def test_settings_keys_are_exactly_the_schema_options():
    assert set(LoaderSettings.model_fields) == ALL
    # Settings inherits them and declares none of them again by hand.
    assert issubclass(Settings, LoaderSettings)
    assert not set(Settings.__annotations__) & ALL
    for spec in SPECS:
        field = Settings.model_fields[spec.name]
        assert field.default == spec.default and field.description == spec.help


def test_per_model_keys_and_api_load_fields_are_exactly_the_per_model_options():
    assert set(ModelSettings.model_fields) - MODEL_EXTRAS == PER_MODEL
    assert set(LoadRequest.model_fields) - MODEL_EXTRAS - {"model"} == PER_MODEL
    for name in ALL - PER_MODEL:  # command-line-only and server-only: refused
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            LoadRequest(model=TINY, **{name: True if name != "disk_cache_dir" else "/tmp"})
    assert PER_MODEL == TransformersOptions.settable() | LlamaCppOptions.settable()


def test_model_tab_controls_are_exactly_the_shown_options():
    with gr.Blocks():
        controls = OptionControls(BUILTIN_SCHEMAS, LoaderSettings())
        for group in controls.groups():
            controls.render(group)
    assert {c.spec.name for c in controls.editable} == PER_MODEL
    assert [c.spec.name for c in controls.editable] == [s.name for s in SPECS if s.scope == "model"]
    built = controls._built  # every shown option, the read-only ones included
    assert set(built) == SHOWN
    for name in SHOWN - PER_MODEL:
        assert built[name].component.interactive is False


def test_model_tab_in_the_running_app_offers_the_schema_controls(app_url):
    from gradio_client import Client

    api = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)
    params = api["named_endpoints"]["/model_load"]["parameters"]
    labels = [p["label"] for p in params]
    editable = [s for s in SPECS if s.scope == "model"]
    assert labels == ["Model", *[s.label for s in editable], "context length", "chat template"]


def test_a_new_loader_adds_its_schema_the_same_way():
    """A llama.cpp-shaped schema: its flags, settings keys, per-model keys and controls
    appear with no other code; a shared option must be declared identically."""

    class LlamaCppOptions(LoaderOptions):
        n_ctx: int = option(0, "context length (0: the model's)", flag="--n-ctx")
        n_gpu_layers: int = option(0, "layers on the GPU", flag="--n-gpu-layers")
        n_batch: int = option(512, "prompt batch size", flag="--n_batch")
        tensor_split: GiBList = option((), "share of each GPU, e.g. 60,40", group="placement")
        cache_type: Literal["fp16", "q8_0", "q4_0"] = option("fp16", "KV cache type")
        cpu: bool = option(False, "run on the CPU even if a GPU is present", group="device")

    schemas = (TransformersOptions, LlamaCppOptions)
    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    add_flags(p.add_argument_group("model"), schemas)
    values = vars(p.parse_args(["--n-ctx", "4096", "--n_batch", "256", "--tensor-split", "3,1", "--cpu",
                                "--cache-type", "q8_0", "--load-in-4bit"]))
    assert values == {"n_ctx": 4096, "n_batch": 256, "tensor_split": (3.0, 1.0), "cpu": True, "cache_type": "q8_0",
                      "load_in_4bit": True}
    settings = flat_model("S", schemas)
    assert {"n_ctx", "tensor_split", "cache_type", "load_in_4bit"} <= set(settings.model_fields)
    per_model = flat_model("M", schemas, scopes=("model",), optional=True)
    assert per_model(tensor_split=[2, 2]).tensor_split == (2.0, 2.0)
    with pytest.raises(ValidationError):
        per_model(cache_type="q3")
    with gr.Blocks():
        controls = OptionControls(schemas, settings())
        for group in controls.groups():
            controls.render(group)
    assert {"n_ctx", "n_gpu_layers", "tensor_split", "cache_type"} <= {c.spec.name for c in controls.editable}

    class Clash(LoaderOptions):
        cpu: bool = option(False, "something else")

    with pytest.raises(TypeError, match="'cpu' is declared differently"):
        merged_specs((TransformersOptions, Clash))

    class FlagClash(LoaderOptions):
        precision: Literal["x", "y"] = option("x", "a flag taken by another option", flag="--dtype")

    with pytest.raises(TypeError, match="flag --dtype"):
        merged_specs((TransformersOptions, FlagClash))


def test_a_loader_without_a_schema_is_refused():
    class Bare:
        name = "bare"

    with pytest.raises(ValueError, match="options_schema"):
        LoaderRegistry([Bare()])


GPU_SPLITS = {"20,7": (20.0, 7.0), " 10, 6.5 ": (10.0, 6.5), "20,x": None, "-4": None, "0": None, "inf": None,
              "nan": None, "1,,2": None}


@pytest.mark.parametrize("text", list(GPU_SPLITS))
def test_gpu_split_is_parsed_and_validated_one_way_everywhere(text, tmp_path):
    """The flag, settings.yaml, a per-model entry, the API body and the Model tab's
    text box accept and refuse the same values, with the same result."""
    expected = GPU_SPLITS[text]
    with gr.Blocks():
        controls = OptionControls(BUILTIN_SCHEMAS, LoaderSettings())
        for group in controls.groups():
            controls.render(group)
    split_box = next(c for c in controls.editable if c.spec.name == "gpu_split")
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"gpu_split": text}))
    (tmp_path / "model_settings.yaml").write_text(yaml.safe_dump({TINY: {"gpu_split": text}}))
    if expected is None:
        with pytest.raises(SystemExit):
            parse_flags([f"--gpu-split={text}"])
        assert any("gpu_split" in w for w in build_settings({"user_data_dir": tmp_path})[1])
        assert ModelSettingsStore(tmp_path).get(TINY) == ModelSettings()
        with pytest.raises(ValidationError, match="gpu_split"):
            LoadRequest(model=TINY, gpu_split=text)
        with pytest.raises(ValidationError, match="gpu_split"):
            ModelSettings(gpu_split=split_box.read(text))
    else:
        assert parse_flags([f"--gpu-split={text}"])[0]["gpu_split"] == expected
        assert build_settings({"user_data_dir": tmp_path})[0].gpu_split == expected
        assert ModelSettingsStore(tmp_path).get(TINY).gpu_split == expected
        assert LoadRequest(model=TINY, gpu_split=text).gpu_split == expected
        assert ModelSettings(gpu_split=split_box.read(text)).gpu_split == expected
        assert split_box.read(split_box.show(expected)) == ",".join(f"{g:g}" for g in expected)


def test_yaml_lists_and_integers_still_load(tmp_path):
    (tmp_path / "settings.yaml").write_text("gpu_split: [10, 6.5]\ncpu_memory: 16\ndisk_cache_dir: /tmp/offload\n")
    settings, warnings = build_settings({"user_data_dir": tmp_path})
    assert not warnings
    assert settings.gpu_split == (10.0, 6.5) and settings.cpu_memory == 16.0
    assert str(settings.disk_cache_dir) == "/tmp/offload"


def test_command_line_only_options_come_only_from_flags(tmp_path):
    (tmp_path / "settings.yaml").write_text("allow_pickle: true\ntrust_remote_code: true\n")
    settings, warnings = build_settings({"user_data_dir": tmp_path})
    assert not settings.allow_pickle and not settings.trust_remote_code and len(warnings) == 2
    flags, _ = parse_flags(["--allow-pickle", "--trust-remote-code", "--user-data-dir", str(tmp_path)])
    settings, _ = build_settings(flags)
    assert settings.allow_pickle and settings.trust_remote_code
    with pytest.raises(SettingsError, match="cpu_memory"):
        build_settings({"user_data_dir": tmp_path, "cpu_memory": float("inf")})


def test_options_for_refuses_what_a_model_may_not_set(runtime):
    for name in ALL - PER_MODEL:
        with pytest.raises(LoadError, match=name):
            runtime.models.options_for({name: True})
    with pytest.raises(LoadError, match="cpu_memory"):
        runtime.models.options_for({"cpu_memory": -1.0})


def test_entries_saved_with_the_old_device_key_are_migrated(tmp_path):
    (tmp_path / "model_settings.yaml").write_text(yaml.safe_dump({
        "a": {"device": "cpu", "load_in_8bit": True}, "b": {"device": "auto"}, "c": {"device": "tpu"}}))
    store = ModelSettingsStore(tmp_path)
    assert store.get("a") == ModelSettings(cpu=True, load_in_8bit=True)
    assert store.get("b") == ModelSettings(cpu=False)
    assert store.get("c") == ModelSettings()  # not a value it ever had: refused, as any bad entry
    assert store.save("a", store.get("a")) is None
    assert yaml.safe_load((tmp_path / "model_settings.yaml").read_text())["a"] == {"cpu": True, "load_in_8bit": True}


def test_a_loader_gets_its_own_options_and_never_another_loaders(tmp_path):
    from webui.loaders.hf_transformers import TransformersLoader
    from webui.model_manager import ModelManager

    class OtherOptions(LoaderOptions):
        n_gpu_layers: int = option(0, "layers on the GPU", flag="--n-gpu-layers")
        cpu: bool = option(False, "run on the CPU even if a GPU is present", group="device")

    class OtherLoader:
        name = "other"
        options_schema = OtherOptions

        def can_load(self, folder):
            return False

    manager = ModelManager(tmp_path, LoaderRegistry([TransformersLoader(), OtherLoader()]),
                           TransformersOptions(cpu=True, quant_type="fp4"))
    hf = manager.options_for({"n_gpu_layers": 20, "load_in_4bit": True})
    assert isinstance(hf, TransformersOptions) and hf.load_in_4bit and hf.cpu and hf.quant_type == "fp4"
    other = manager.options_for({"n_gpu_layers": 20, "load_in_4bit": True}, OtherLoader())
    # The shared option keeps its start-up value; the HF-only one is not the other loader's.
    assert other == OtherOptions(n_gpu_layers=20, cpu=True)
    with pytest.raises(LoadError, match="trust_remote_code"):
        manager.options_for({"trust_remote_code": True}, OtherLoader())


def test_a_bad_declaration_fails_when_the_class_is_defined():
    from pathlib import Path

    from pydantic import Field

    with pytest.raises(TypeError, match="option()"):
        class Plain(LoaderOptions):
            threads: int = Field(4)
    with pytest.raises(TypeError, match="no control"):
        class PathInTheTab(LoaderOptions):
            cache: Path | None = option(None, "a folder the browser would choose")
    with pytest.raises(TypeError, match="unknown option"):
        class Dangling(LoaderOptions):
            a: bool = option(False, "a", excludes="b")


def schema_range(name: str) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low exclusive, high exclusive) as SamplingParams validates the field."""
    from webui.generation.params import SamplingParams

    low = high = None
    open_low = open_high = False
    for rule in SamplingParams.model_fields[name].metadata:
        for attr, is_low, is_open in (("ge", True, False), ("gt", True, True), ("le", False, False),
                                      ("lt", False, True)):
            value = getattr(rule, attr, None)
            if value is None:
                continue
            if is_low:
                low, open_low = value, is_open
            else:
                high, open_high = value, is_open
    return low, high, open_low, open_high


def test_parameter_sliders_in_the_running_app_span_exactly_the_validated_ranges(app_url):
    """The Parameters tab's sliders (as the browser receives them) reach exactly as far
    as SamplingParams accepts: top_k to 100,000, max_new_tokens to 32,768; an end the
    schema excludes is one step inside it, so every offered value is valid."""
    from gradio_client import Client

    from webui.generation.params import SamplingParams, make_params

    config = Client(app_url, verbose=False).config  # the page's components, as the browser gets them
    sliders = {c["props"]["label"]: c["props"] for c in config["components"]
               if c.get("type") == "slider" and c["props"].get("label") in SamplingParams.model_fields}
    ranged = {name for name in SamplingParams.model_fields if None not in schema_range(name)[:2]
              and SamplingParams.model_fields[name].annotation in (int, float)}
    assert set(sliders) <= ranged
    assert {"top_k", "max_new_tokens", "truncation_length", "repetition_penalty_range"} <= set(sliders)
    for name, props in sliders.items():
        low, high, open_low, open_high = schema_range(name)
        step = props["step"]
        assert props["minimum"] == pytest.approx(low + step if open_low else low), name
        assert props["maximum"] == pytest.approx(high - step if open_high else high), name
        # Both ends are values the schema takes.
        for end in (props["minimum"], props["maximum"]):
            value = int(end) if SamplingParams.model_fields[name].annotation is int else float(end)
            make_params({name: value})
    assert sliders["top_k"]["maximum"] == 100_000
    assert sliders["max_new_tokens"]["maximum"] == 32_768
