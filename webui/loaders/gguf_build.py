"""The GGUF engine's background build, as the app sees it.

`./start.sh` installs the core first and serves the page at once; llama-cpp-python
(which compiles llama.cpp: minutes) is built afterwards by scripts/build_gguf.sh, which
writes its state to `<user data>/logs/gguf-build.state` ("building|done|failed <unix
time>") and its output to `gguf-build.log` beside it.  The Model tab shows the state;
loading a GGUF model while it builds says so instead of "not installed".
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from webui.loaders.base import LoadError

STATE_FILE = "gguf-build.state"
LOG_FILE = "gguf-build.log"


class EngineBuilding(LoadError):
    """A GGUF model was asked for while its engine is still being built."""

    status, code = 503, "engine_building"


@dataclass(frozen=True)
class BuildState:
    state: str  # building, done or failed
    since: float  # when it entered that state (unix time)
    log: Path


def build_state(user_data_dir: Path) -> BuildState | None:
    """The background build's state, or None when none was started (CI, a manual install)."""
    logs = user_data_dir / "logs"
    try:
        words = (logs / STATE_FILE).read_text(encoding="utf-8")[:200].split()
    except OSError:
        return None
    if len(words) < 2 or words[0] not in {"building", "done", "failed"}:
        return None
    try:
        since = float(words[1])
    except ValueError:
        return None
    return BuildState(words[0], since, logs / LOG_FILE)


def llama_cpp_installed() -> bool:
    importlib.invalidate_caches()  # installed after this process started: look again
    return importlib.util.find_spec("llama_cpp") is not None


def refuse_while_building(user_data_dir: Path) -> None:
    """Raise EngineBuilding while the background build runs and llama.cpp is not in yet."""
    found = build_state(user_data_dir)
    if found is not None and found.state == "building" and not llama_cpp_installed():
        raise EngineBuilding("the GGUF engine (llama.cpp) is still being built in the background; GGUF models "
                             f"load once it is done (progress: the Model tab, log: {found.log})")


def status_line(user_data_dir: Path, tail_lines: int = 3) -> str | None:
    """Markdown for the Model tab: the build's state and its log's last lines; None when
    no background build was started or it is done."""
    found = build_state(user_data_dir)
    if found is None or found.state == "done":
        return None
    try:
        lines = found.log.read_text(encoding="utf-8", errors="replace")[-4000:].splitlines()[-tail_lines:]
    except OSError:
        lines = []
    tail = "\n".join(f"    {line[:200]}" for line in lines)
    if found.state == "building":
        head = ("⏳ The GGUF engine (llama.cpp) is being built in the background: GGUF models load when it is "
                f"done. Log: `{found.log}`")
    else:
        head = (f"❌ The GGUF engine's build failed (log: `{found.log}`); ./start.sh tries again, "
                "or scripts/install.sh quant,gguf builds it in the foreground")
    return head + (f"\n\n{tail}" if tail else "")
