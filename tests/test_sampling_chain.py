"""Sampling parameters end to end: validation, chain order, presets, model defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webui.generation.chain import build_chain
from webui.generation.engine import GenerationRequest
from webui.paths import NameRefused
from webui.generation.params import SAMPLER_ORDER, ParamsError, SamplingParams, make_params
from webui.presets import PresetLibrary, model_defaults, preset_delta
from webui.settings import DEMO_MODEL, PROJECT_ROOT

EVERY_STEP_ON = dict(
    repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.2, dry_multiplier=0.8,
    top_n_sigma=2.0, temperature=0.9, smoothing_factor=0.3, top_k=40, top_p=0.95, typical_p=0.95,
    epsilon_cutoff=3.0, eta_cutoff=3.0, tfs=0.95, top_a=0.1, min_p=0.05, xtc_probability=0.5,
    no_repeat_ngram_size=6, mirostat_mode=2,
)


def chain_names(params, runtime):
    loaded = runtime.models.current
    chain = build_chain(params, loaded.tokenizer, loaded.backend, loaded.backend.vocab_size(), loaded.backend.eos_ids())
    return [type(step).__name__ for step in chain]


def test_neutral_params_build_an_empty_chain(runtime):
    assert chain_names(SamplingParams(), runtime) == []


def test_every_step_appears_once_in_default_order(runtime):
    names = chain_names(make_params(EVERY_STEP_ON), runtime)
    assert names[0] == "RepetitionPenaltyLogitsProcessor"
    assert names[-1] == "Mirostat2LogitsProcessor"
    assert names.index("TemperatureLogitsWarper") < names.index("TopKLogitsProcessor")
    assert names.index("MinPLogitsWarper") < names.index("XTCLogitsProcessor")
    # All steps but dynamic temperature (off); presence and frequency are one class each time.
    assert len(names) == len(SAMPLER_ORDER) - 1


def test_sampler_priority_and_temperature_last_reorder_the_chain(runtime):
    params = make_params({**EVERY_STEP_ON, "sampler_priority": ["min_p", "top_k"], "temperature_last": True})
    names = chain_names(params, runtime)
    assert names[:2] == ["MinPLogitsWarper", "TopKLogitsProcessor"]
    # temperature steps move to the end, mirostat stays last (it picks the token).
    assert names[-3:] == ["TemperatureLogitsWarper", "QuadraticSmoothingLogitsProcessor", "Mirostat2LogitsProcessor"]


def test_dynamic_temperature_replaces_plain_temperature(runtime):
    params = make_params({"temperature": 0.7, "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5})
    assert chain_names(params, runtime) == ["DynamicTemperatureLogitsProcessor"]


@pytest.mark.parametrize(
    ("values", "field"),
    [({"sampler_priority": ["top_k", "bogus"]}, "sampler_priority"),
     ({"sampler_priority": ["top_k", "top_k"]}, "sampler_priority"),
     ({"custom_token_bans": [-1]}, "custom_token_bans"), ({"custom_token_bans": ["5"]}, "custom_token_bans"),
     ({"logit_bias": {"5": float("nan")}}, "logit_bias"), ({"logit_bias": {"5": 1000.0}}, "logit_bias"),
     ({"mirostat_mode": 1}, "mirostat_mode"),
     ({"dynamic_temperature": True, "dynatemp_low": 2.0, "dynatemp_high": 1.0}, "dynatemp_low"), ({"dry_base": 0.5}, "dry_base"),
     ({"xtc_probability": 1.5}, "xtc_probability"), ({"dry_sequence_breakers": "]+__import__('os')"}, "dry_sequence_breakers"),
     ({"presence_penalty": "1"}, "presence_penalty"), ({"encoder_repetition_penalty": 1.0}, "encoder_repetition_penalty")],
)
def test_bad_values_are_refused_with_the_field_named(values, field):
    with pytest.raises(ParamsError, match=field):
        make_params(values)


@pytest.mark.parametrize(
    ("values", "field"),
    [({"custom_token_bans": [9_999_999]}, "custom_token_bans"), ({"logit_bias": {"9999999": 5.0}}, "logit_bias"),
     ({"logit_bias": {"-1": 5.0}}, "logit_bias")],
)
def test_token_ids_outside_the_vocabulary_are_refused_before_generating(engine, values, field):
    from webui.generation.params import ParamsError

    stream = engine.generate(GenerationRequest("The keeper", make_params({**values, "max_new_tokens": 5})))
    with pytest.raises(ParamsError, match=field) as refused:  # its own type, from the model thread: a 400
        stream.text()
    assert refused.value.param == field


def generate(engine, **values):
    stream = engine.generate(GenerationRequest("The keeper climbed", make_params({"max_new_tokens": 40, **values})))
    return stream.text(), stream.stats


def test_same_seed_reproduces_text_through_the_full_chain(engine):
    values = {**EVERY_STEP_ON, "mirostat_mode": 0, "seed": 1234}
    assert generate(engine, **values)[0] == generate(engine, **values)[0]
    values = {**EVERY_STEP_ON, "seed": 99}  # mirostat on: it samples with the seeded RNG too
    assert generate(engine, **values)[0] == generate(engine, **values)[0]


def test_logit_bias_and_bans_really_shape_the_output(engine, tokenizer):
    forced = tokenizer.encode("keeper", add_special_tokens=False)[-1]
    text, _ = generate(engine, temperature=0.0, logit_bias={str(forced): 100.0}, max_new_tokens=6)
    assert text.split() == ["keeper"] * 6
    greedy_text, _ = generate(engine, temperature=0.0)
    first = tokenizer.encode(greedy_text, add_special_tokens=False)[0]
    banned_text, _ = generate(engine, temperature=0.0, custom_token_bans=[first])
    assert banned_text != greedy_text


def test_presets_save_load_delete_roundtrip(tmp_path):
    library = PresetLibrary(PROJECT_ROOT / "presets", tmp_path)
    params = make_params({"temperature": 0.6, "dry_multiplier": 0.8, "stop": ["\nUser:"]})
    path = library.save("My favourite", params)
    assert yaml.safe_load(path.read_text()) == preset_delta(params)  # delta only
    assert library.load("My favourite") == params
    library.delete("My favourite")
    assert "My favourite" not in library.names()


@pytest.mark.parametrize("name", ["../x", "x/../../y", ".hidden", "", "a" * 300, "x\x00", None])
def test_preset_save_refuses_bad_names(tmp_path, name):
    library = PresetLibrary(PROJECT_ROOT / "presets", tmp_path)
    with pytest.raises(NameRefused):
        library.save(name, SamplingParams())
    assert list(tmp_path.iterdir()) == []


def test_bundled_presets_cannot_be_deleted(tmp_path):
    library = PresetLibrary(PROJECT_ROOT / "presets", tmp_path)
    with pytest.raises(NameRefused):
        library.delete("min_p")
    assert (PROJECT_ROOT / "presets" / "min_p.yaml").exists()


def test_text_generation_webui_preset_loads(tmp_path):
    (tmp_path / "tgw.yaml").write_text(
        'temperature: 0.7\nmin_p: 0.05\ndry_multiplier: 0.8\n'
        # As Text Generation WebUI writes it: one YAML string of quoted JSON strings.
        + r"""dry_sequence_breakers: '"\n", ":", "\"", "*"'"""
    )
    params = PresetLibrary(tmp_path, Path("/nonexistent")).load("tgw")
    assert params.dry_sequence_breakers == ("\n", ":", '"', "*")


def test_model_generation_config_supplies_defaults():
    defaults = model_defaults(PROJECT_ROOT / "models" / DEMO_MODEL)
    assert defaults["temperature"] == 0.8 and defaults["top_p"] == 0.95
    assert make_params(defaults).max_new_tokens == defaults["max_new_tokens"]


def test_last_used_values_are_remembered_across_restarts(models_root, tmp_path):
    from tests.conftest import make_settings
    from webui.runtime import build_runtime
    from webui.settings import build_settings

    (tmp_path / "settings.yaml").write_text("listen_port: 9005\n")
    runtime = build_runtime(make_settings(models_root, tmp_path))
    chosen = make_params({"temperature": 0.42, "xtc_probability": 0.3})
    assert runtime.remember(chosen) is None
    saved = yaml.safe_load((tmp_path / "settings.yaml").read_text())
    assert saved["listen_port"] == 9005  # the rest of the file is kept
    settings, warnings = build_settings({"user_data_dir": tmp_path, "model_dir": models_root, "model": "tiny-llama"})
    assert warnings == []
    assert build_runtime(settings).default_params == chosen
    assert build_runtime(settings, use_remembered=False).default_params != chosen


def apply(runtime, values, probs):
    """Run the chain for `values` on hand-made probabilities; return the result's probabilities."""
    import torch

    loaded = runtime.models.current
    params = make_params(values)
    chain = build_chain(params, loaded.tokenizer, loaded.backend, loaded.backend.vocab_size(), loaded.backend.eos_ids())
    scores = torch.log(torch.tensor([probs]))
    return torch.softmax(chain(torch.tensor([[1, 2, 3]]), scores), dim=-1)[0].tolist()


@pytest.mark.parametrize(
    ("values", "probs", "kept"),
    [({"top_k": 2}, [0.1, 0.5, 0.3, 0.1], [1, 2]),
     ({"top_p": 0.6}, [0.5, 0.3, 0.2], [0, 1]),  # 0.5 alone is under 0.6; 0.5 + 0.3 is over
     ({"min_p": 0.5}, [0.5, 0.3, 0.2], [0, 1]),  # threshold 0.5 x 0.5 = 0.25
     ({"epsilon_cutoff": 5.0}, [0.9992, 0.0006, 0.0002], [0, 1]),  # 5e-4 drops only the last
     ({"top_a": 0.9}, [0.5, 0.3, 0.2], [0, 1])],  # 0.9 x 0.5^2 = 0.225
)
def test_built_in_truncation_steps_on_hand_made_probabilities(runtime, values, probs, kept):
    out = apply(runtime, values, probs)
    assert [i for i, p in enumerate(out) if p > 0] == kept
    total = sum(probs[i] for i in kept)
    assert out == pytest.approx([probs[i] / total if i in kept else 0.0 for i in range(len(probs))], abs=1e-5)


def test_temperature_step_on_hand_made_probabilities(runtime):
    # Temperature 0.5 squares the probabilities before renormalising.
    out = apply(runtime, {"temperature": 0.5}, [0.5, 0.3, 0.2])
    squares = [0.25, 0.09, 0.04]
    assert out == pytest.approx([s / sum(squares) for s in squares], abs=1e-5)


def test_cfg_with_a_negative_prompt_steers_the_reply(engine):
    """README: CFG with a negative prompt.  Greedy, so any change is the guidance's."""
    def reply(**cfg) -> str:
        params = make_params({"temperature": 0.0, "max_new_tokens": 24, "ban_eos_token": True, **cfg})
        return engine.generate(GenerationRequest("And God said, Let there be light", params)).text()

    plain = reply()
    away_from_sea = reply(guidance_scale=3.0, negative_prompt="the sea and the ships")
    away_from_kings = reply(guidance_scale=3.0, negative_prompt="kings and their battles")
    assert away_from_sea != plain and away_from_kings != plain
    assert away_from_sea != away_from_kings  # the negative prompt itself matters
    assert reply(guidance_scale=1.0, negative_prompt="the sea and the ships") == plain  # 1 = off
