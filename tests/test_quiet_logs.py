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


def test_offline_notices_from_bitsandbytes_import_are_not_printed():
    """On a CPU with AVX512-BF16 bitsandbytes looks on the hub for a 4-bit kernel at import and
    warns twice that the app is offline; other CPUs print nothing either way."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO);"
            "from webui.loaders.quiet_logs import quiet_offline_notices; quiet_offline_notices();"
            "import bitsandbytes")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "Skipping publisher trust check" not in result.stderr
    assert "Failed to load CPU gemm_4bit_forward" not in result.stderr


def test_the_offline_filter_drops_only_its_notices():
    import logging

    from webui.loaders.quiet_logs import quiet_offline_notices

    quiet_offline_notices()
    quiet_offline_notices()  # idempotent
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    notice = logger.makeRecord(logger.name, logging.WARNING, "f", 1,
                               "Failed to load CPU gemm_4bit_forward from kernels-community: %s", ("x",), None)
    other = logger.makeRecord(logger.name, logging.WARNING, "f", 1, "something else went wrong", (), None)
    assert not logger.filters[0].filter(notice) and logger.filters[0].filter(other)
