"""A long reply from an 8-bit model leaves a short log: no per-matmul lines."""

from __future__ import annotations

import logging

from tests.tiny_models import build_llama
from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelManager


def test_an_8bit_reply_logs_the_cast_warning_once(tmp_path, caplog):
    build_llama(tmp_path / "tiny")
    manager = ModelManager(tmp_path, default_registry(), LoadOptions(cpu=True, load_in_8bit=True))
    manager.load("tiny")
    with caplog.at_level(logging.WARNING):
        stream = GenerationEngine(manager).generate(
            GenerationRequest("The keeper", make_params({"temperature": 0.0, "max_new_tokens": 40, "ban_eos_token": True})))
        stream.text()
    casts = [r for r in caplog.records if "will be cast" in r.getMessage()]
    # 40 steps x 2 layers x 7 matmuls would be hundreds of lines; one says it all.
    assert stream.stats.new_tokens == 40
    assert len(casts) <= 1
