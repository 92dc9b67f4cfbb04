"""docs/EXTENSIONS.md against the code (as datasette does for its plugin hooks):
every hook documented with its exact signature, every hook tested, and the worked
example run as a real extension."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.test_extensions import host_with
from webui.extensions import make_state
from webui.extensions.host import SPECS
from webui.generation.params import make_params
from webui.settings import PROJECT_ROOT

DOC = (PROJECT_ROOT / "docs" / "EXTENSIONS.md").read_text(encoding="utf-8")
TESTS = Path(__file__).parent


def documented() -> dict[str, str]:
    return {m[1]: f"({m[2]})" for m in re.finditer(r"^### `(\w+)\((.*)\)`$", DOC, re.MULTILINE)}


def test_every_hook_is_documented_with_its_exact_signature():
    docs = documented()
    assert set(docs) == set(SPECS), f"undocumented: {set(SPECS) - set(docs)}; unknown: {set(docs) - set(SPECS)}"
    for name, signature in SPECS.items():
        assert docs[name] == str(signature), f"{name}: documented {docs[name]}, is {signature}"


def test_every_hook_has_a_test_of_its_own():
    names = set()
    for path in TESTS.glob("test_extension*.py"):
        names |= {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    missing = [hook for hook in SPECS if not any(n.startswith(f"test_hook_{hook}") for n in names)]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_has_a_docstring_in_the_specs():
    from webui.extensions import hookspecs

    assert [n for n in SPECS if not getattr(hookspecs, n).__doc__] == []


def test_the_worked_example_runs(tmp_path):
    import gradio as gr

    section = DOC[DOC.index("## A worked example"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]
    host = host_with(tmp_path, {"polite": code})
    assert host.names() == ["polite"] and not host.faults()
    state = make_state(make_params({}))
    assert host.input("Tell me", state, False) == "Politely: Tell me"
    assert host.input("Tell me", state, True) == "Tell me"
    assert host.output("Done.  ", state, False) == "Done. Thank you."
    assert host.bot_prefix("A: ", state) == "A: Certainly. "
    with gr.Blocks():
        ok, _ = host.call_one(host.get("polite"), "ui")
    assert ok
