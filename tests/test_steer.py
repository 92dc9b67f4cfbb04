"""Control vectors (webui/steer/) on the demo model: trained from "love" and "hate"
contrast pairs, saved as llama.cpp's GGUF control vector, applied per request by the
Transformers backend (a per-row addition in a batch) and by llama.cpp (the GGUF copy of
the same model), through the engine, the OpenAI API and the Steer tab."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import openai
import pytest
import torch
from gradio_client import Client

from tests.conftest import API_KEY, free_port, make_settings
from tests.gguf_fixtures import require_llama_cpp
from webui.generation.backend import Capabilities
from webui.generation.engine import GenerationRequest
from webui.generation.params import ParamsError, make_params
from webui.settings import DEMO_MODEL, PROJECT_ROOT
from webui.steer import cvec_file
from webui.steer.cvec_file import ControlVector, VectorFileError
from webui.steer.train import Pairs

MODELS = PROJECT_ROOT / "models"
DEMO_GGUF = "demo-kjv-4m-gguf"
PROMPTS = ("And he said unto them,", "Then the people went", "And it came to pass that", "Behold, the king",
           "And the LORD spake unto Moses, saying,", "The children of Israel", "And they came unto the city",
           "Now the word of the LORD came")
PAIRS = Pairs("I love thee, and my heart is full of love.", "I hate thee, and my heart is full of hatred.", PROMPTS)
PROBE = "And he said, I"
STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
LOVE = 1016  # "▁love" in the demo model's vocabulary (the GGUF copy has the same ids)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model (fp32: rows of a batch are then independent to the bit) with a
    vector "love" trained from the pairs by the Steer service."""
    from webui.runtime import build_runtime

    runtime = build_runtime(make_settings(MODELS, tmp_path_factory.mktemp("steer_user_data"), model=DEMO_MODEL,
                                          api_key=API_KEY, dtype="fp32"))
    assert runtime.models.current is not None, runtime.warnings
    runtime.steer.start("love", PAIRS)
    snap = runtime.steer.wait(120)
    assert snap.state == "done", snap
    yield runtime
    runtime.engine.close()
    runtime.models.unload()


def love_logprob(runtime, strength: float) -> tuple[float, torch.Tensor]:
    """log P(" love") after PROBE with the vector at `strength`, read from the loaded
    backend's own prefill (the path a request takes), and the whole row."""
    with runtime.models.lend("steer test") as loaded:
        uses = make_params({"control_vectors": [{"name": "love", "strength": strength}]}).control_vectors
        steer = runtime.engine.vectors.resolve(uses, loaded.backend.capabilities.steering)
        ids = loaded.tokenizer.encode(PROBE)
        slot = loaded.backend.start(ids, reuse=False, **({"steer": steer} if steer is not None else {}))
        row = torch.log_softmax(slot.logits.float().reshape(-1), -1)
        loaded.backend.finish(slot, keep=False)
    return float(row[LOVE]), row


def test_a_trained_vector_moves_the_positive_word_monotonically_with_strength(demo):
    path = demo.settings.user_data_dir / "control-vectors" / "love.gguf"
    vector = cvec_file.read(path)
    assert demo.models.current.tokenizer.encode(" love", add_special_tokens=False) == [LOVE]
    assert vector.layers == [1, 2, 3] and vector.width == 256 and vector.model_hint == "llama"
    values = [love_logprob(demo, s)[0] for s in STRENGTHS]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] - values[2] > 0.1 and values[2] - values[0] > 0.1, values


def test_the_file_is_llama_cpps_format_and_steers_the_gguf_copy_the_same_way(demo, tmp_path):
    from gguf import GGUFReader

    from webui.runtime import build_runtime

    require_llama_cpp()
    path = demo.settings.user_data_dir / "control-vectors" / "love.gguf"
    reader = GGUFReader(path)  # llama.cpp's own Python reader
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2", "direction.3"]
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"} and {int(t.n_elements) for t in reader.tensors} == {256}
    hf = [love_logprob(demo, s)[0] for s in (-1.0, 0.0, 1.0)]

    runtime = build_runtime(make_settings(MODELS, tmp_path, model=DEMO_GGUF, api_key=API_KEY))
    try:
        assert runtime.models.current.loader == "llama.cpp", runtime.warnings
        (tmp_path / "control-vectors").mkdir()
        shutil.copy(path, tmp_path / "control-vectors" / "love.gguf")
        gguf = [love_logprob(runtime, s)[0] for s in (-1.0, 0.0, 1.0, -1.0, 0.0)]
        # llama.cpp took the vector (llama_set_adapter_cvec) and moves the word as the
        # Transformers model does; and clearing it gives the unsteered numbers back.
        assert gguf[0] < gguf[1] < gguf[2], gguf
        assert gguf[3] == pytest.approx(gguf[0], abs=1e-4) and gguf[4] == pytest.approx(gguf[1], abs=1e-4)
        assert np.sign(gguf[2] - gguf[0]) == np.sign(hf[2] - hf[0])
        # Two requests steered differently: each reply is what it is alone (llama.cpp
        # steers a whole context, so the engine decodes them in separate batches).
        alone = [reply(runtime, s) for s in (2.0, 0.0)]
        together = replies(runtime, (2.0, 0.0))
        assert together == alone and alone[0] != alone[1], (alone, together)
    finally:
        runtime.engine.close()
        runtime.models.unload()


def request(strength: float | None, logprobs: int | None = None) -> GenerationRequest:
    values = {"max_new_tokens": 16, "do_sample": False}
    if strength is not None:
        values["control_vectors"] = [{"name": "love", "strength": strength}]
    return GenerationRequest(prompt=PROBE, params=make_params(values), logprobs=logprobs)


def reply(runtime, strength: float | None) -> str:
    return runtime.engine.generate(request(strength)).text()


def replies(runtime, strengths) -> list[str]:
    streams = runtime.engine.generate_many([request(s) for s in strengths])
    return [stream.text() for stream in streams]


def test_two_requests_in_one_batch_with_different_strengths_reply_as_each_alone(demo):
    strengths = (3.0, -3.0, None)
    alone = [reply(demo, s) for s in strengths]
    assert len(set(alone)) == 3, alone  # the vector changes the reply, each strength its own way
    seen = []
    original = demo.models.current.backend.step

    def watch(slots, tokens):
        seen.append(len(slots))
        return original(slots, tokens)

    demo.models.current.backend.step = watch
    try:
        together = replies(demo, strengths)
    finally:
        del demo.models.current.backend.step
    assert max(seen) == 3  # decoded in one batch
    assert together == alone


def test_strength_zero_changes_nothing_and_installs_no_hook(demo):
    plain = demo.engine.generate(request(None, logprobs=5))
    zero = demo.engine.generate(request(0.0, logprobs=5))
    assert plain.text() == zero.text()
    assert plain.logprobs and plain.logprobs == zero.logprobs
    assert demo.engine.vectors.resolve(make_params({"control_vectors": [{"name": "love", "strength": 0}]})
                                       .control_vectors, (256, 4)) is None
    _, row_zero = love_logprob(demo, 0.0)
    with demo.models.lend("steer test") as loaded:
        slot = loaded.backend.start(loaded.tokenizer.encode(PROBE), reuse=False)
        row = torch.log_softmax(slot.logits.float().reshape(-1), -1)
        loaded.backend.finish(slot, keep=False)
        layers = loaded.model.model.layers
        assert not any(layer._forward_hooks for layer in layers)  # hooks are gone after each forward
    assert torch.equal(row, row_zero)


def test_a_steered_reply_never_reuses_or_leaves_prefix_cache_states(demo):
    backend = demo.models.current.backend
    backend.clear_cache()
    plain = reply(demo, None)
    steered = demo.engine.generate(request(3.0))
    text = steered.text()
    assert steered.stats.cached_tokens == 0 and text != plain
    again = demo.engine.generate(request(None))
    assert again.text() == plain  # from the unsteered cache entry: unchanged by the steered one


def hostile_files(folder):
    good = ControlVector({1: np.ones(256, np.float32), 2: np.ones(256, np.float32)}, "llama")
    data = cvec_file.encode(good)
    files = {
        "narrow": cvec_file.encode(ControlVector({1: np.ones(128, np.float32)}, "llama")),
        "deep": cvec_file.encode(ControlVector({9: np.ones(256, np.float32)}, "llama")),
        "truncated": data[: len(data) - 100],
        "garbage": b"GGUF" + b"\xff" * 60,
        "notgguf": b"hello world" * 10,
        "huge-count": data[:8] + struct.pack("<Q", 2**62) + data[16:],
        "model": data.replace(b"controlvector", b"llama\0\0\0\0\0\0\0\0"),
        "nan": cvec_file.encode(ControlVector({1: np.full(256, np.nan, np.float32)}, "llama")),
    }
    for name, blob in files.items():
        (folder / f"{name}.gguf").write_bytes(blob)
    with (folder / "oversize.gguf").open("wb") as handle:  # sparse: 65 MiB declared, nothing written
        handle.write(data)
        handle.truncate(65 << 20)
    files["oversize"] = b""
    return files


def test_hostile_or_mismatched_files_are_refused_by_name(demo):
    folder = demo.settings.user_data_dir / "control-vectors"
    names = hostile_files(folder)
    try:
        for name in names:
            with pytest.raises((VectorFileError, ParamsError)) as caught:
                demo.engine.vectors.resolve(make_params({"control_vectors": [{"name": name}]}).control_vectors,
                                            (256, 4))
            assert name in str(caught.value), (name, caught.value)
            stream = demo.engine.generate(GenerationRequest(prompt=PROBE, params=make_params(
                {"max_new_tokens": 4, "control_vectors": [{"name": name, "strength": 1}]})))
            with pytest.raises(ParamsError) as caught:
                stream.text()
            assert caught.value.param == "control_vectors" and name in str(caught.value)
        with pytest.raises(ParamsError) as caught:
            demo.engine.generate(GenerationRequest(prompt=PROBE, params=make_params(
                {"control_vectors": [{"name": "missing", "strength": 1}]}))).text()
        assert "unknown control vector: missing" in str(caught.value)
        with pytest.raises(ParamsError):
            make_params({"control_vectors": [{"name": "../love", "strength": 1}]})
        with pytest.raises(ParamsError, match="love has no direction for layers 7-9"):
            demo.engine.vectors.resolve(make_params({"control_vectors": [{"name": "love", "layers": [7, 9]}]})
                                        .control_vectors, (256, 4))
    finally:
        for name in names:
            (folder / f"{name}.gguf").unlink()


def test_a_backend_that_cannot_steer_refuses_the_field_by_name():
    assert Capabilities(samplers=None).ignores({"control_vectors", "temperature"}) == ["control_vectors"]
    assert Capabilities(samplers=None, steering=(256, 4)).ignores({"control_vectors"}) == []


def test_the_api_field_through_the_openai_client(demo):
    from webui.api.openai_api import APIServer

    server = APIServer(demo, port=free_port())
    client = openai.OpenAI(base_url=server.start(), api_key=API_KEY)
    try:
        def complete(**extra):
            return client.completions.create(model=DEMO_MODEL, prompt=PROBE, max_tokens=12, temperature=0,
                                             extra_body=extra).choices[0].text

        plain = complete()
        steered = complete(control_vectors=[{"name": "love", "strength": 3}])
        both = complete(control_vectors=[{"name": "love", "strength": 2}, {"name": "love", "strength": 1}])
        assert steered != plain and both == steered  # several vectors add up
        assert complete(control_vectors=[{"name": "love", "strength": 0}]) == plain
        with pytest.raises(openai.BadRequestError) as caught:
            complete(control_vectors=[{"name": "nope", "strength": 1}])
        assert caught.value.body["param"] == "control_vectors" and "nope" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError) as caught:
            complete(control_vectors=[{"name": "love", "strength": 99}])
        assert caught.value.body["param"].startswith("control_vectors")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app_url(demo):
    from webui.ui.app import launch

    app, url = launch(demo, block=False, port=free_port())
    yield url
    app.close()


def test_the_parameters_tab_steers_the_notebook(app_url):
    from webui.ui.parameters_tab import KINDS, control_values

    client = Client(app_url, verbose=False)

    def controls(**changes):
        values = dict(zip(KINDS, control_values(make_params({"max_new_tokens": 12, "do_sample": False})),
                          strict=True))
        return list({**values, **changes}.values())

    def notebook(**changes) -> str:
        assert client.predict(*controls(**changes), api_name="/set_params") == ""
        return client.predict(PROBE, api_name="/notebook_generate")[0]

    plain = notebook()
    assert notebook(control_vectors="love: 3") != plain
    assert notebook(control_vectors="love: 3 @ 1-3") == notebook(control_vectors="love: 3")
    assert notebook(control_vectors="love: 0") == plain
    status = client.predict(*controls(control_vectors="love three"), api_name="/set_params")
    assert "Not applied" in status and "control_vectors" in status


def test_the_parameters_tabs_picker_adds_a_vectors_line_and_applies_it(app_url, demo):
    from webui.ui.parameters_tab import KINDS, control_values, with_vector

    client = Client(app_url, verbose=False)
    assert "love" in str(client.predict(api_name="/steer_vectors"))
    values = control_values(make_params({"max_new_tokens": 12, "do_sample": False}))
    box = values[list(KINDS).index("control_vectors")]
    note, text = client.predict(box, "love", 2.5, "1-3", *values, api_name="/steer_add")
    assert text == "love: 2.5 @ 1-3" and "Not applied" not in note
    used = demo.remembered().control_vectors  # applied: the values in use, saved as the last used
    assert [(u.name, u.strength, tuple(u.layers)) for u in used] == [("love", 2.5, (1, 3))]
    # Picking it again replaces its line; another vector's line is kept.
    assert with_vector("calm: 1\nlove: 2.5 @ 1-3", "love", -1.0, "") == "calm: 1\nlove: -1"
    note, _ = client.predict(box, "love", 1.0, "three", *values, api_name="/steer_add")
    assert "Not applied" in note and "layers" in note
    note, _ = client.predict(box, "", 1.0, "", *values, api_name="/steer_add")
    assert "Not applied" in note and "vector" in note


def test_the_steer_tab_trains_shows_progress_lists_and_checks(demo, app_url):
    try:
        client = Client(app_url, verbose=False)
        job = client.submit("tab-love", PAIRS.positive, PAIRS.negative, "\n".join(PROMPTS[:3]),
                            api_name="/steer_train")
        status, bar, listing = job.result()
        seen = [out[0] for out in job.outputs()]
        assert "preparing" in seen[0] or "training" in seen[0]
        assert "done" in status and "user_data/control-vectors/tab-love.gguf" in status, status
        assert "3 / 3 prompts (100.0%)" in bar
        assert "tab-love" in str(client.predict(api_name="/steer_list"))
        assert "layers 1–3" in client.predict("tab-love", api_name="/steer_about")
        line = client.predict("tab-love", 2.0, api_name="/steer_check")
        assert "unsteered" in line and "with tab-love at 2" in line
        plain, steered = (float(x) for x in __import__("re").findall(r"\*\*([0-9.]+)\*\*", line))
        assert plain > 1 and steered > 1 and steered != plain
    finally:
        (demo.settings.user_data_dir / "control-vectors" / "tab-love.gguf").unlink(missing_ok=True)


def test_a_remote_webui_is_sent_the_field_as_json_and_others_refuse_it():
    import json

    from webui.remote.capabilities import capabilities, upstream_fields

    params = make_params({"control_vectors": [{"name": "love", "strength": 2, "layers": [1, 2]}]})
    body = json.loads(json.dumps(upstream_fields("webui", params, ())))
    assert body["control_vectors"] == [{"name": "love", "strength": 2.0, "layers": [1, 2]}]
    assert capabilities("webui").ignores({"control_vectors"}) == []
    assert capabilities("llama.cpp").ignores({"control_vectors"}) == ["control_vectors"]
    assert "control_vectors" not in upstream_fields("openai", params, ())
