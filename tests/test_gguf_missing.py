"""Without llama-cpp-python the app still starts, lists GGUF models and says how to enable them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.gguf_fixtures import HF_NAME, Q8
from webui.loaders.gguf_options import INSTALL_HINT
from webui.settings import PROJECT_ROOT

# Runs in a fresh interpreter where importing llama_cpp fails as if it were not installed.
SCRIPT = r"""
import json, sys
from pathlib import Path

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from webui.runtime import build_runtime
from webui.settings import Settings
from webui.ui.app import build_app

root, user_data, presets, q8, hf = sys.argv[1:]
runtime = build_runtime(Settings(model=q8, model_dir=Path(root), user_data_dir=Path(user_data),
                                 presets_dir=Path(presets), preset="Deterministic"))
app = build_app(runtime)
notes = [block.value for block in app.blocks.values() if type(block).__name__ == "Markdown"]
fit = runtime.fit_report(q8)
runtime.load_model(hf, save=False)
print(json.dumps({"warnings": runtime.warnings, "names": runtime.models.names(), "notes": notes, "fit": fit,
                  "loaded": runtime.models.current.name, "text": "".join(runtime.stream("t", "Hello", runtime.default_params))}))
sys.stdout.flush()
# Leave without interpreter shutdown: torch aborts the process ("terminate called without
# an active exception") when shutdown finds the daemon model thread inside a torch call.
import os
os._exit(0)
"""


def test_app_starts_without_llama_cpp_and_says_how_to_enable_gguf(gguf_root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(gguf_root), str(tmp_path), str(PROJECT_ROOT / "presets"), Q8, HF_NAME],
        capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Q8 in result["names"] and HF_NAME in result["names"]
    # The start-up GGUF model is not loaded, and the warning (shown atop the page) says how to enable it.
    assert any(INSTALL_HINT in warning for warning in result["warnings"])
    assert any(INSTALL_HINT in (note or "") for note in result["notes"])
    # What can be done without it still works: the GGUF metadata, and other models.
    assert "Q8_0" in result["fit"]
    assert result["loaded"] == HF_NAME and result["text"]
