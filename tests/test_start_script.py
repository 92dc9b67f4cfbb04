"""./start.sh serves the page before the GGUF engine's build ends: the build runs in the
background (scripts/build_gguf.sh, here with a stub build step that waits for the test),
its state and log land in the data dir, the Model tab shows it, and loading a GGUF
model meanwhile says it is being built."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import PROJECT_ROOT, free_port, wait_for


def test_the_page_serves_while_the_gguf_engine_builds(tmp_path):
    # A venv that is the project's own (a wrapper around its python) whose stamp says the
    # core is installed and gguf is not: start.sh then installs nothing in the foreground.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    digest = hashlib.sha256((PROJECT_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".webui-installed").write_text(f"{digest} quant,test\n")
    data = tmp_path / "user data"
    release = tmp_path / "release"
    port = free_port()
    env = {**os.environ, "WEBUI_VENV": str(venv), "WEBUI_EXTRAS": "quant,gguf",
           "WEBUI_GGUF_BUILD_CMD": f'echo stub compiling; while [ ! -f "{release}" ]; do sleep 0.05; done'}
    env.pop("WEBUI_GGUF_LATER", None)  # start.sh's own default
    server = subprocess.Popen(  # noqa: S603 - our own script
        [str(PROJECT_ROOT / "start.sh"), "--user-data-dir", str(data), "--listen-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    state = data / "logs" / "gguf-build.state"
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_for(lambda: served(url), timeout=180)
        # The page is up, and the build has not ended: the stub still waits for `release`.
        assert state.read_text().split()[0] == "building"
        assert "stub compiling" in (data / "logs" / "gguf-build.log").read_text()
        from webui.loaders.gguf_build import EngineBuilding, llama_cpp_installed, refuse_while_building, status_line

        assert "being built in the background" in status_line(data)
        if not llama_cpp_installed():  # where llama.cpp is missing, a GGUF load says why
            try:
                refuse_while_building(data)
                raise AssertionError("a GGUF load was not refused while its engine builds")
            except EngineBuilding as exc:
                assert "still being built" in str(exc)
        release.touch()
        assert wait_for(lambda: state.read_text().split()[0] == "done", timeout=60)
        assert (venv / ".webui-installed").read_text().split()[1] == "quant,test,gguf"
        assert status_line(data) is None
    finally:
        release.touch()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def served(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_ci_still_installs_gguf_in_the_foreground():
    """.ci/run installs every extra before the tests: without WEBUI_GGUF_LATER nothing is deferred."""
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/install.sh quant,test,gguf" in ci and "WEBUI_GGUF_LATER" not in ci
    script = (PROJECT_ROOT / "scripts" / "install.sh").read_text()
    assert 'if [ "${WEBUI_GGUF_LATER:-0}" = 1 ]' in script
    assert Path(PROJECT_ROOT / "scripts" / "build_gguf.sh").stat().st_mode & 0o111
