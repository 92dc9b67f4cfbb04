"""Split GGUF models (`NAME-00001-of-0000N.gguf` parts): listed as one entry, counted
whole by Will it fit?, loaded by llama.cpp from the first part, same output as one file."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import make_settings
from tests.gguf_fixtures import F32, SPLIT, SPLIT_PARTS, require_llama_cpp
from webui.fit import gguf_estimate
from webui.loaders.base import LoadError
from webui.loaders.gguf_files import choose_file, gguf_files, parts_of, read_info
from webui.loaders.gguf_loader import LlamaCppLoader
from webui.loaders.gguf_options import LlamaCppOptions

PROMPT = "Once upon a time there was"


def greedy(entry, tokens=16, **options):
    loader = LlamaCppLoader()
    loaded = loader.load(entry.name, entry, LlamaCppOptions(**options))
    try:
        backend = loaded.backend
        slot = backend.start(loaded.tokenizer(PROMPT)["input_ids"])
        out = [int(slot.logits.argmax())]
        for _ in range(tokens - 1):
            out.append(int(backend.step([slot], [out[-1]]).argmax()))
        backend.finish(slot, keep=False)
        return out
    finally:
        loader.unload(loaded)


def test_the_parts_carry_llama_cpps_split_keys(gguf_split):
    from gguf import GGUFReader

    parts = parts_of(gguf_split)
    assert [p.name for p in parts] == [f"tiny-f32-{i:05d}-of-{SPLIT_PARTS:05d}.gguf" for i in range(1, 4)]
    whole = len(GGUFReader(gguf_split.parent.parent / F32).tensors)
    counts = []
    for number, part in enumerate(parts):
        reader = GGUFReader(part)
        assert reader.fields["split.no"].contents() == number
        assert reader.fields["split.count"].contents() == SPLIT_PARTS
        assert reader.fields["split.tensors.count"].contents() == whole
        counts.append(len(reader.tensors))
    assert sum(counts) == whole and all(counts)


def test_a_split_is_one_entry_and_will_it_fit_counts_every_part(gguf_root, gguf_split, tmp_path):
    from webui.runtime import build_runtime

    folder = gguf_root / SPLIT
    assert list(gguf_files(folder)) == [gguf_split.name]
    assert choose_file(folder) == gguf_split
    single, split = read_info(gguf_root / F32), read_info(gguf_split)
    part_bytes = sum(p.stat().st_size for p in parts_of(gguf_split))
    assert split.file_bytes == part_bytes > gguf_split.stat().st_size
    assert (split.parameters, split.block_bytes, split.output_bytes) == (
        single.parameters, single.block_bytes, single.output_bytes)
    assert gguf_estimate(split, 512, 0, "fp16").weights_ram == part_bytes
    runtime = build_runtime(make_settings(gguf_root, tmp_path, model=None))
    assert SPLIT in runtime.models.names()
    assert runtime.models.registry.for_folder(runtime.models.available()[SPLIT]).name == "llama.cpp"
    assert f"file `{gguf_split.name}` {part_bytes / (1 << 20):.2f} MiB" in runtime.fit_report(SPLIT)


def test_a_split_loads_from_its_folder_or_first_part_and_answers_as_the_single_file(gguf_root, gguf_split, tmp_path):
    require_llama_cpp()
    expected = greedy(gguf_root / F32, n_ctx=128)
    assert greedy(gguf_root / SPLIT, n_ctx=128) == expected
    # The first part alone at the top of models/, its parts beside it: listed by its name.
    top = tmp_path / "models"
    top.mkdir()
    for part in parts_of(gguf_split):
        shutil.copy(part, top / part.name)
    assert gguf_files(top) == {gguf_split.name: top / gguf_split.name}
    assert greedy(top / gguf_split.name, n_ctx=128) == expected
    # A missing part: a clear error naming it, before llama.cpp is asked.
    (top / parts_of(gguf_split)[-1].name).unlink()
    with pytest.raises(LoadError, match=f"part tiny-f32-00003-of-0000{SPLIT_PARTS}.gguf is missing"):
        greedy(top / gguf_split.name)
