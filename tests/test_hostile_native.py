"""Hostile grammars, schemas and chat templates (issue 26; probes N1-N3, N5, N6, N9-N11,
N15, N19): one request must never take the server down, stall its other routes, or
answer with a plain-text 500.

Payloads that crashed the process run against a server in a subprocess, which must be
alive and answering afterwards.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, TINY, free_port

KEY = {"authorization": f"Bearer {API_KEY}"}
HOSTILE_MODEL = "tiny-hostile-template"
ROOT = Path(__file__).resolve().parent.parent


# -- payloads (hostile-round2.md) --------------------------------------------------------
def rule_name(i: int) -> str:
    name = ""
    while True:
        name = "abcdefghijklmnopqrstuvwxyz"[i % 26] + name
        i //= 26
        if i == 0:
            return name


def lark_chain(n: int) -> str:
    """N1: `a: "a" b`, `b: "a" c`, ... n rules."""
    return "start: a\n" + "\n".join(f'{rule_name(i)}: "a" {rule_name(i + 1)}' for i in range(n)) + \
        f'\n{rule_name(n)}: "c"'


def gbnf_chain(n: int) -> str:
    """N5: the same chain in GBNF (llguidance's converter is quadratic in it)."""
    return "root ::= a\n" + "\n".join(f'{rule_name(i)} ::= "a" {rule_name(i + 1)} | "b"' for i in range(n)) + \
        f'\n{rule_name(n)} ::= "c"'


def ref_chain(n: int) -> dict:
    """N2/N3: $defs d0 -> d1 -> ... -> dn through properties.a.$ref."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(n)}
    defs[f"d{n}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


# A model whose own chat template turns hostile on a word (N9 loop, N10 doubling, N11
# recursion), and renders a plain chat otherwise.  The doubling stops at 2^25 characters
# so that today's code, which lets it run, builds 32 MB rather than gigabytes.
HOSTILE_TEMPLATE = """
{%- set last = messages[-1]['content'] -%}
{%- if last == 'LOOP' -%}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}
{%- elif last == 'DOUBLE' -%}{%- set ns = namespace(s='x') %}{% for i in range(25) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}
{%- elif last == 'RECURSE' -%}{%- macro f(n) %}{{ f(n + 1) }}{% endmacro -%}{{ f(0) }}
{%- endif -%}
{%- for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}
"""


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    """`python -m webui` on loopback (UI and API) serving a model with HOSTILE_TEMPLATE."""
    root = tmp_path_factory.mktemp("native_models")
    shutil.copytree(models_root / TINY, root / HOSTILE_MODEL)
    (root / HOSTILE_MODEL / "chat_template.jinja").write_text(HOSTILE_TEMPLATE, encoding="utf-8")
    api_port, ui_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webui", "--model-dir", str(root), "--model", HOSTILE_MODEL,
         "--user-data-dir", str(tmp_path_factory.mktemp("native_ud")), "--listen-port", str(ui_port),
         "--api", "--api-port", str(api_port), "--api-key", API_KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 180  # bounded wait for start-up
        while time.monotonic() < deadline and process.poll() is None:
            try:  # both servers: the UI may come up after the API
                if (httpx.get(f"{api}/v1/models", headers=KEY, timeout=5).status_code == 200
                        and httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=5).status_code == 200):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert process.poll() is None, "the server did not start"
        yield process, api, f"http://127.0.0.1:{ui_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # an event loop stuck in a template (today's code) never gets to SIGTERM
            process.wait(timeout=30)


def alive_and_answering(server) -> None:
    process, api, _ = server
    assert process.poll() is None, f"the server died (exit status {process.returncode})"
    response = httpx.get(f"{api}/v1/models", headers=KEY, timeout=30)
    assert response.status_code == 200 and response.json()["data"], response.text


def openai_400(response: httpx.Response, param: str) -> str:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return error["message"]


# -- N1, N2, N3, N5, N15: deep grammars and schemas -------------------------------------
def test_deep_grammars_and_schemas_are_refused_and_the_server_lives(server):
    _, api, ui = server
    post = lambda path, body: httpx.post(f"{api}{path}", json=body, headers=KEY, timeout=120)  # noqa: E731
    base = {"model": HOSTILE_MODEL, "max_tokens": 4}

    message = openai_400(post("/v1/completions", {**base, "prompt": "hi", "grammar_string": lark_chain(4000)}),
                         "grammar_string")
    assert "levels deep" in message
    alive_and_answering(server)

    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": ref_chain(1000)}}
    chat = {**base, "messages": [{"role": "user", "content": "hi"}]}
    openai_400(post("/v1/chat/completions", {**chat, "response_format": schema}), "response_format")
    alive_and_answering(server)

    ollama = post("/api/generate", {"model": HOSTILE_MODEL, "prompt": "hi", "stream": False,
                                    "format": ref_chain(1000)})
    assert ollama.status_code == 400 and "levels deep" in ollama.json()["error"], ollama.text[:300]
    alive_and_answering(server)

    # A function's parameters become the grammar of a forced call (N4 stopped at 740 levels
    # only by the length cap; this chain is shorter and deeper than any real one).
    tool = {"type": "function", "function": {"name": "f", "parameters": ref_chain(400)}}
    openai_400(post("/v1/chat/completions", {**chat, "tools": [tool],
                                             "tool_choice": {"type": "function", "function": {"name": "f"}}}),
               "tools")
    alive_and_answering(server)

    # N5: the 2,400-rule GBNF chain took 11 s on the event loop; refused before converting.
    openai_400(post("/v1/completions", {**base, "prompt": "hi", "grammar_string": gbnf_chain(2400)}),
               "grammar_string")

    # N15: the same grammar typed into the Parameters tab.
    from gradio_client import Client

    from tests.test_app_client import controls

    status = Client(ui, verbose=False).predict(*controls(grammar_string=lark_chain(4000)), api_name="/set_params")
    assert "Not applied" in status and "grammar_string" in status, status
    alive_and_answering(server)


# -- N9, N10, N11: hostile chat templates ----------------------------------------------
@pytest.mark.parametrize("word", ["DOUBLE", "RECURSE", "LOOP"])
def test_hostile_chat_templates_are_a_400_in_each_api_shape(server, word):
    _, api, _ = server
    body = {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": word}], "max_tokens": 4}
    message = openai_400(httpx.post(f"{api}/v1/chat/completions", json=body, headers=KEY, timeout=60), "messages")
    assert "chat template" in message
    ollama = httpx.post(f"{api}/api/chat", json={**body, "stream": False}, headers=KEY, timeout=60)
    assert ollama.status_code == 400 and "chat template" in ollama.json()["error"], ollama.text[:300]
    alive_and_answering(server)


def test_a_normal_chat_still_renders_with_that_template(server):
    _, api, _ = server
    body = {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    response = httpx.post(f"{api}/v1/chat/completions", json=body, headers=KEY, timeout=60)
    assert response.status_code == 200, response.text[:300]


# -- N5, N19: slow requests off the event loop -------------------------------------------
def test_slow_requests_do_not_stall_the_model_list(server):
    """Requests that spend their time in checks (a template running to its budget, a
    1 MB prompt tokenized only to be refused) run beside GET /v1/models, which answers
    while they are still running."""
    _, api, _ = server
    slow_bodies = [
        {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "LOOP"}], "max_tokens": 4},
        {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "LOOP"}], "max_tokens": 4},
        {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "x" * 1_000_000}], "max_tokens": 4},
        {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "LOOP"}], "max_tokens": 4},
    ]
    statuses: list[int] = []

    def send(body: dict) -> None:
        statuses.append(httpx.post(f"{api}/v1/chat/completions", json=body, headers=KEY, timeout=120).status_code)

    threads = [threading.Thread(target=send, args=(body,)) for body in slow_bodies]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # pacing only: let the slow requests reach the server first
    listed = httpx.get(f"{api}/v1/models", headers=KEY, timeout=60)
    still_running = sum(thread.is_alive() for thread in threads)
    for thread in threads:
        thread.join(timeout=180)
    assert listed.status_code == 200
    assert still_running > 0, "the model list answered only after every slow request had ended"
    assert sorted(statuses) == [400] * len(slow_bodies), statuses


# -- N6: grammars that match nothing -----------------------------------------------------
@pytest.mark.parametrize("grammar", ["root ::= a\na ::= a", "start: /[^\\s\\S]/"])
def test_a_grammar_that_matches_nothing_is_refused(api_url, grammar):
    response = httpx.post(f"{api_url}/completions", headers={"x-api-key": API_KEY}, timeout=60,
                          json={"model": TINY, "prompt": "hi", "max_tokens": 4, "grammar_string": grammar})
    assert "matches nothing" in openai_400(response, "grammar_string")


def test_a_grammar_just_under_the_depth_limit_decodes_in_the_server(api_url):
    """Compiled first by the child; then the engine's own matcher (in this process)
    builds it from the same grammar on a larger stack and decodes with it."""
    from webui.generation.grammar_compile import MAX_DEPTH

    grammar = lark_chain(MAX_DEPTH - 5)
    response = httpx.post(f"{api_url}/completions", headers={"x-api-key": API_KEY}, timeout=120,
                          json={"model": TINY, "prompt": "hi", "max_tokens": 6, "grammar_string": grammar})
    assert response.status_code == 200, response.text[:300]
    assert set(response.json()["choices"][0]["text"]) <= {"a", "c"}


# -- the net under the depth measure: a compile that crashes ---------------------------
CRASHING_COMPILE = """
import sys
sys.path.insert(0, "tests")
from test_hostile_native import lark_chain
import webui.generation.grammar_compile as grammar_compile
grammar_compile.MAX_DEPTH = 10**9  # let the chain past the Python-side measure
first = grammar_compile.grammar_problem("grammar_string", lark_chain(5000))
second = grammar_compile.grammar_problem("grammar_string", 'root ::= "yes" | "no"')
print(repr(first)); print(repr(second))
assert first and "crashed" in first, first
assert second is None, second
"""


def test_a_grammar_that_crashes_the_compiler_is_refused_and_the_next_one_compiles():
    done = subprocess.run([sys.executable, "-c", CRASHING_COMPILE], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])


# -- the budgeted renderer itself ------------------------------------------------------
@pytest.mark.parametrize("template", [
    "{{ 'x' * 1000000000 }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ '%01000000000d' % 1 }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x' * 1000) %}{% for i in range(10) %}{% set ns.s = ns.s|replace('x', ns.s) %}"
    "{% endfor %}",
    "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for m in messages %}{{ m.content * 50 }}{% endfor %}{% endfor %}",
])
def test_templates_that_build_or_loop_without_end_are_stopped(template):
    from webui.chat.template_sandbox import render_chat_template
    from webui.generation.request import PromptError

    with pytest.raises(PromptError, match="chat template was stopped"):
        render_chat_template(template, [{"role": "user", "content": "hi"}], tokens={})


def test_the_budgeted_renderer_matches_transformers(tokenizer):
    from transformers.utils.chat_template_utils import render_jinja_template

    from webui.chat.prompt import FALLBACK_TEMPLATE
    from webui.chat.template_sandbox import render_chat_template, special_tokens

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!", "reasoning_content": "greet"},
                {"role": "user", "content": "2+2?"}]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    templates = [tokenizer.chat_template, FALLBACK_TEMPLATE, HOSTILE_TEMPLATE,
                 "{{ bos_token }}{% for m in messages %}{% generation %}{{ m.content|trim }}{% endgeneration %}"
                 "{{ m|tojson }}{% endfor %}{{ tools|tojson(indent=2) }}{{ strftime_now('%Y') }}"]
    for template in templates:
        theirs = render_jinja_template([messages], tools=tools, chat_template=template, add_generation_prompt=True,
                                       **tokenizer.special_tokens_map)[0][0]
        ours = render_chat_template(template, messages, tokens=special_tokens(tokenizer), tools=tools)
        assert ours == theirs, template


def test_a_compile_past_its_time_is_refused_and_the_next_one_gets_a_fresh_compiler():
    from webui.generation.grammar_worker import CompileWorker, WorkerFailed

    worker = CompileWorker()
    try:
        assert worker.compile("grammar", 'root ::= "a"', seconds=60).grammar  # a child is running
        with pytest.raises(WorkerFailed, match="took too long"):
            worker.compile("grammar", gbnf_chain(150), seconds=1e-9)  # a deadline already past
        outcome = worker.compile("grammar", 'root ::= "yes" | "no"', seconds=60)
        assert outcome.grammar and outcome.problem is None
    finally:
        worker.close()
