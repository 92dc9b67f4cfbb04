"""Property-based fuzzing of every UI endpoint and API route (found by enumeration, so
one added later is fuzzed too), on a server of its own on loopback.

For any input: a success or a clear error (never a 500, never a bare "error"); the
server still answers within seconds afterwards; no file appears or vanishes outside
user data; memory stays bounded.  Bounded: a fixed number of examples, derandomized
(tests/conftest.py), well under a minute on an idle machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY, API_KEY, TINY, free_port, make_settings
from tests.test_hostile_sweep import HOSTILE_NAMES, tree
from webui.settings import PROJECT_ROOT

ODD_TEXT = [*HOSTILE_NAMES, "a\ud800b", "\udfff", "NaN", "1e309", "{{ 7*7 }}", "<script>x</script>", "\x00", " "]
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=40) | st.sampled_from(ODD_TEXT))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=10)
# Endpoints left out: they would end the fuzzed server's session or reach the network.
SKIP_UI = {"model_unload", "session_apply_extensions", "model_download"}
SKIP_API = {"/v1/internal/models/unload"}


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def encode(value) -> bytes:
    """JSON as a hostile client may write it: NaN and Infinity literals, lone surrogates
    as escapes (json.dumps' defaults)."""
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def fuzzed(models_root, tmp_path_factory):
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("fuzz_user_data")
    runtime = build_runtime(make_settings(models_root, user_data, api_key=API_KEY, admin_key=ADMIN_KEY,
                                          sampling={"max_new_tokens": 4}))
    app, ui_url = launch(runtime, block=False, port=free_port())
    server = APIServer(runtime, port=free_port())
    api_url = server.start()
    yield runtime, ui_url.rstrip("/"), api_url
    server.stop()
    app.close()


def ui_endpoints(ui_url: str) -> list[tuple[str, int]]:
    from gradio_client import Client

    info = Client(ui_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    return sorted((name.lstrip("/"), len(spec["parameters"])) for name, spec in info.items()
                  if name.lstrip("/") not in SKIP_UI)


def ui_call(http: httpx.Client, api_name: str, data: list) -> tuple[str, str]:
    started = http.post(f"/gradio_api/call/{api_name}", content=encode({"data": data}),
                        headers={"content-type": "application/json"})
    if started.status_code != 200:
        return str(started.status_code), started.text
    event_id = started.json()["event_id"]
    kind = ""
    with http.stream("GET", f"/gradio_api/call/{api_name}/{event_id}") as answer:
        for line in answer.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                return kind, line.split(":", 1)[1].strip()
    return kind, ""


def test_fuzz_ui_endpoints(fuzzed, models_root):
    runtime, ui_url, _ = fuzzed
    endpoints = ui_endpoints(ui_url)
    assert len(endpoints) >= 30
    roots = (models_root, PROJECT_ROOT)
    before, memory = tree(*roots), rss_bytes()
    seen: set[str] = set()

    with httpx.Client(base_url=ui_url, timeout=60) as http:
        # Enough calls to meet most endpoints, however many the UI has.
        @settings(max_examples=max(150, 3 * len(endpoints)), suppress_health_check=list(HealthCheck), deadline=None,
                  database=None)
        @given(st.data())
        def one_call(data):
            name, count = data.draw(st.sampled_from(endpoints))
            args = data.draw(st.lists(values, min_size=count, max_size=count))
            seen.add(name)
            kind, message = ui_call(http, name, args)
            if kind == "413":
                return  # a body over the cap: refused before any handler (fine)
            assert kind in ("complete", "error"), (name, args, kind, message)
            if kind == "error":
                assert message not in ("", "null"), (name, args)  # an error with a message

        one_call()
        assert len(seen) >= len(endpoints) // 2
        assert http.get("/", timeout=10).status_code == 200  # still serving
    user_data = str(runtime.settings.user_data_dir)
    changed = {p for p in tree(*roots) ^ before if not p.startswith(user_data) and "/.hypothesis" not in p}
    assert changed == set()
    assert rss_bytes() - memory < 400 << 20


def api_routes(api_url: str) -> list[tuple[str, list[str]]]:
    schema = httpx.get(f"{api_url}/openapi.json", headers={"x-api-key": API_KEY}, timeout=30).json()
    components = schema["components"]["schemas"]
    routes = []
    for path, item in schema["paths"].items():
        if "post" in item and path not in SKIP_API:
            ref = item["post"].get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            fields = list(components.get(ref.get("$ref", "").rsplit("/", 1)[-1], {}).get("properties", {}))
            routes.append((path, fields))
    return routes


def bounded(body):
    """Keep a valid request short: the point is the input, not waiting for long replies."""
    if isinstance(body, dict):
        for key, most in (("max_tokens", 8), ("max_completion_tokens", 8), ("n", 2)):
            value = body.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and value > most:
                body[key] = most
    return body


def test_fuzz_api_routes(fuzzed):
    runtime, _, api_url = fuzzed
    routes = api_routes(api_url)
    assert {"/v1/chat/completions", "/v1/completions", "/v1/internal/models/load"} <= {p for p, _ in routes}
    root = api_url.removesuffix("/v1")
    memory = rss_bytes()
    messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", 7]),
                                               "content": values}), max_size=3)

    with httpx.Client(timeout=60) as http:
        @settings(max_examples=150, suppress_health_check=list(HealthCheck), deadline=None, database=None)
        @given(st.data())
        def one_request(data):
            path, fields = data.draw(st.sampled_from(routes))
            chosen = data.draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
            body = {f: data.draw(messages if f == "messages" else st.just(TINY) | values) for f in chosen}
            body = data.draw(st.just(bounded(body)) | values)  # sometimes not even an object
            key = ADMIN_KEY if "/internal/" in path else API_KEY
            answer = http.post(root + path, content=encode(body), headers={"x-api-key": key,
                                                                           "content-type": "application/json"})
            assert answer.status_code < 500 or answer.status_code == 503, (path, body, answer.text)
            if answer.status_code >= 400:
                error = answer.json()["error"]
                # Ollama's routes answer in Ollama's shape: {"error": "message"}.
                message = error if path.startswith("/api/") else error["message"]
                assert isinstance(message, str) and message, (path, body)

        one_request()
        assert http.get(f"{api_url}/models", headers={"x-api-key": API_KEY}, timeout=10).status_code == 200
    assert runtime.models.current is not None
    assert rss_bytes() - memory < 400 << 20


# -- grammar/schema depth and chat-template budgets (issue 26) -------------------------
# In this process on purpose: with the depth measure and the compile worker, no grammar
# may take it down (before them, a chain of ~3,000 rules was a SIGSEGV here).
@settings(max_examples=24, deadline=None, database=None)
@given(kind=st.sampled_from(["lark", "gbnf", "ref", "ref-nested"]), depth=st.integers(1, 4000))
def test_fuzz_grammar_and_schema_depth(kind, depth):
    from tests.test_hostile_native import gbnf_chain, lark_chain, ref_chain
    from webui.generation.grammar_compile import MAX_DEPTH, grammar_problem

    if kind in ("lark", "gbnf"):
        problem = grammar_problem("grammar_string", (lark_chain if kind == "lark" else gbnf_chain)(depth))
        levels = depth + 2  # start/root and the last rule
    else:
        schema = ref_chain(depth // 3 if kind == "ref" else depth // 30)
        if kind == "ref-nested":  # each $def nests ten objects before its $ref
            for definition in list(schema["$defs"].values())[:-1]:
                inner = definition["properties"]["a"]
                for _ in range(10):
                    inner = {"type": "object", "properties": {"b": inner}}
                definition["properties"]["a"] = inner
        problem = grammar_problem("json_schema", json.dumps(schema))
        levels = None
    if levels is not None and levels > MAX_DEPTH:
        assert problem and "levels deep" in problem, problem
    elif levels is not None:
        assert problem is None, problem
    else:
        assert problem is None or "levels deep" in problem, problem


FRAGMENTS = [
    "{% for i in range(N) %}{% for j in range(N) %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(N) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(N) %}{% set ns.s = ns.s + ns.s|replace('a', ns.s) %}"
    "{% endfor %}",
    "{% macro f(n) %}{% if n < N %}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "{{ 'x' * N }}{{ 'y'|center(N) }}{{ ('z' ~ N) * N }}",
    "{% for m in messages %}{{ m.content * N }}{% endfor %}",
]


@settings(max_examples=30, deadline=None, database=None)
@given(parts=st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from([0, 3, 40, 5000, 100000, 10**9])),
                      min_size=1, max_size=3))
def test_fuzz_chat_template_budgets(parts):
    """Any mix of loops, doublings, recursion and repeats: a text or a PromptError that
    says the template was stopped, never a hang, a MemoryError or a crash."""
    from webui.chat.template_sandbox import render_chat_template
    from webui.generation.request import PromptError

    template = "".join(fragment.replace("N", str(n)) for fragment, n in parts) + \
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    try:
        text = render_chat_template(template, [{"role": "user", "content": "hello"}], tokens={})
    except PromptError as exc:
        assert "chat template was stopped" in str(exc), exc
    except Exception as exc:  # a template's own error (e.g. range() past Jinja's cap) is its own type
        from jinja2.exceptions import TemplateError

        assert isinstance(exc, (TemplateError, OverflowError)), repr(exc)
    else:
        assert text.endswith("hello")
