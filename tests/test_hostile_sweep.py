"""Every name-taking UI endpoint and API route, found by enumeration (so one added
later is covered too), gets the HOSTILE.md names; nothing may be read, written or
deleted outside the intended folders, and the server must keep serving."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import httpx
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import ADMIN_KEY, API_KEY, TINY, wait_for
from webui.paths import is_plain_name
from webui.settings import PROJECT_ROOT

HOSTILE_NAMES = ["../../etc/passwd", "..%2f..%2fx", "/etc/hosts", "C:\\x", "a/../../b", "x\x00y", "",
                 "a" * 300, "../app.py", "x.py", ".bashrc", ".."]
# Components whose value names something on the server (a model, preset, ...).
NAME_COMPONENTS = {"Dropdown", "Radio"}
NAME_LABELS = ("name", "save as")
# What a refusal of a name says (ours: webui/paths.py and the stores; Gradio's: a
# dropdown value not among its choices).
# The words of the name checks themselves, not of any error: a refusal for some other
# reason (a missing field, a failed validation) would hide a name that was never checked.
# A name field's own validation (pydantic) and the owner-only actions count too: they
# refuse before the name is used.
REFUSED = re.compile(r"unknown [\w -]+: |invalid [\w -]*name|not in the list of choices|use letters, digits|expected the name of"
                     r"|\bname\n +String should|only the owner", re.I)
# Endpoints whose "name" is free text, not a server name: a display name, a search
# filter, a Hub repository id (checked by the downloader, for a download and for listing
# a repository's GGUF files), the live token count.
# character_save's picker value is only compared with the listing (an unknown one
# means "a new character", saved under the Name field, which the sweep sets to "hi").
FREE_TEXT = {"/persona_save", "/chat_search", "/model_download", "/model_gguf_files", "/chat_count_tokens",
             "/character_save"}
# Events the Chatbot raises with event data (which message was edited or clicked);
# called over the API without it, Gradio fails building that data before our handler
# runs, so the refusal cannot name the check.
EVENT_DATA = {"/chat_edit", "/chat_pick_message"}


def tree(*roots) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


# Some text for the text fields (the chat's message box takes text with images).
TEXT = {"Textbox": "hi", "Multimodaltextbox": {"text": "hi", "files": []}}


def name_parameters(client: Client) -> list[tuple[str, int, list]]:
    """(endpoint, index of a name parameter, defaults of all parameters).

    Other text fields get some text, so that an action which needs it (Send needs a
    message) goes on to check the name rather than stopping before it."""
    found = []
    for endpoint, info in client.view_api(print_info=False, return_format="dict")["named_endpoints"].items():
        params = info["parameters"]
        defaults = [p.get("parameter_default") if p.get("parameter_has_default") and p["component"] != "Multimodaltextbox"
                    else TEXT.get(p["component"], p.get("parameter_default")) for p in params]
        for index, param in enumerate(params):
            label = (param.get("label") or "").lower()
            if param["component"] in NAME_COMPONENTS or any(word in label for word in NAME_LABELS):
                found.append((endpoint, index, defaults))
    return found


def test_ui_name_parameters_refuse_hostile_names(app_url, runtime, models_root):
    from tests.test_app_client import controls

    # Files an event hands out are not fetched: a character exported as "x.py" and deleted
    # by a call in the same batch takes its export with it (webui/ui/exports.py, forget),
    # and which calls share a batch changes whenever an endpoint is added.
    client = Client(app_url, verbose=False, download_files=False)
    # Short replies: an accepted (plain or empty) name lets Send go on to the model.
    client.predict(*controls(max_new_tokens=4), api_name="/set_params")
    targets = name_parameters(client)
    assert {"/model_load", "/load_preset", "/save_preset", "/delete_preset"} <= {t[0] for t in targets}
    before = tree(models_root, runtime.settings.user_data_dir) | {str(p) for p in PROJECT_ROOT.iterdir()}
    # All at once: each endpoint's requests queue on their own, so the sweep takes
    # as long as the slowest endpoint, not the sum of all of them.
    calls = []
    for endpoint, index, defaults in targets:
        for name in HOSTILE_NAMES:
            args = list(defaults)
            args[index] = name
            calls.append((endpoint, name, args))
    unchecked, other = [], []
    for endpoint, name, job in submit_in_batches(client, calls):
        try:
            result = job.result(timeout=300)
        except AppError as exc:
            # Refused, and by the name check: not some other error on the way.
            # (A plain name passed the check: something else may refuse the call.)
            if not (REFUSED.search(str(exc)) or endpoint in EVENT_DATA or is_plain_name(name)):
                other.append((endpoint, name, str(exc)[:200]))
            continue
        text = str(result)
        assert "root:" not in text and "localhost" not in text, (endpoint, name)  # nothing echoed
        # Accepted: only a plain name (it passed the check as a name may), free text, or
        # no name at all (an empty template name means the model's own).
        if endpoint not in FREE_TEXT and not is_plain_name(name) and name != "":
            unchecked.append((endpoint, name))
    assert other == [], "refused, but not by a name check: " + "\n".join(sorted({f"{e}: {m}" for e, _, m in other}))
    assert unchecked == [], f"accepted without a name check: {unchecked}"
    # Replies that the sweep started (a plain or empty name is a fine name) end and are saved.
    assert wait_for(lambda: runtime.engine.pending == 0, timeout=120)
    after = tree(models_root, runtime.settings.user_data_dir) | {str(p) for p in PROJECT_ROOT.iterdir()}
    # Saving under a plain name (e.g. a preset or character called "x.py") may create
    # a file, but only inside user data and only with an allowlisted suffix.
    user_data = runtime.settings.user_data_dir
    allowed = {str(user_data / d) for d in ("presets", "characters", "chats", "documents", "documents/files",
                                            "control-vectors", "lorebooks")}
    # The documents store (a library made under a plain name): one SQLite file and its journal.
    stores = (".yaml", ".json", ".png", "index.sqlite", "index.sqlite-wal", "index.sqlite-shm")
    created = {p for p in after - before if p not in allowed and not (
        p.startswith(f"{user_data}/") and p.endswith(stores) and "/." not in p) and not (
        # A control vector trained under a plain name (the Steer tab): NAME.gguf in its folder.
        p.startswith(f"{user_data}/control-vectors/") and p.endswith(".gguf") and "/." not in p)}
    assert created == set() and before - after == set()
    assert runtime.models.current.name == TINY
    assert client.predict(api_name="/model_list") is not None  # still serving


def submit_in_batches(client: Client, calls, size: int = 40):
    """Submit (endpoint, label, args) calls a batch at a time (fewer than the app's
    queue holds: a full queue refuses the rest) and yield (endpoint, label, job)."""
    for start in range(0, len(calls), size):
        batch = [(endpoint, label, client.submit(*args, api_name=endpoint))
                 for endpoint, label, args in calls[start:start + size]]
        for _, _, job in batch:
            while not job.done():  # the caller reads each job's outcome
                time.sleep(0.05)
        yield from batch


def code_payloads(marker) -> list[str]:
    """Text that would create `marker` if anything evaluated, templated or shelled it."""
    return [
        f"]+__import__('os').system('touch {marker}')+[",
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"!!python/object/apply:os.system ['touch {marker}']",
    ]


def test_ui_text_parameters_never_run_code(app_url, runtime, tmp_path):
    """HOSTILE.md 5 and 7: code in any text field stays text (no eval, no template, no shell)."""
    from tests.test_app_client import controls

    marker = tmp_path / "pwned"
    client = Client(app_url, verbose=False)
    client.predict(*controls(max_new_tokens=4), api_name="/set_params")
    calls = []
    for endpoint, info in client.view_api(print_info=False, return_format="dict")["named_endpoints"].items():
        params = info["parameters"]
        if not any(p["component"] == "Textbox" for p in params):
            continue
        for payload in code_payloads(marker):  # every text field of the endpoint at once
            args = [payload if p["component"] == "Textbox" else p.get("parameter_default") for p in params]
            calls.append((endpoint, payload, args))
    assert len({endpoint for endpoint, _, _ in calls}) >= 10
    accepted = set()
    for endpoint, _payload, job in submit_in_batches(client, calls):
        try:
            job.result(timeout=300)
            accepted.add(endpoint)
        except AppError:
            pass  # refused (a name, a missing conversation): the payload stayed text either way
    # The payloads reached the code behind most endpoints: they were taken as text and used.
    assert len(accepted) >= 10, accepted
    assert not marker.exists()
    assert runtime.models.current.name == TINY
    assert client.predict(api_name="/model_list") is not None  # still serving


# Request-body fields that name something on the server.
NAME_FIELDS = {"model", "name", "lora", "loras", "chat_template", "template", "preset", "character", "extension"}
# What a minimal valid request carries besides the field under test.
MINIMAL = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "text": "hi",
           "tokens": [1], "max_tokens": 2, "input": "hi"}
# Ollama's routes stream unless told not to, and take the length in `options`.
OLLAMA_MINIMAL = {"stream": False, "options": {"num_predict": 2}}


# Fields where an empty value is the field left out: Ollama's clients send `template: ""`
# with every generate request (the model's own template; any other value is refused).
EMPTY_MEANS_DEFAULT = {("/api/generate", "template")}


def api_name_targets(schema: dict) -> list[tuple[str, str, str, str]]:
    """(method, path, where, field) for every name-taking part of every API route,
    read from the OpenAPI schema, so a route added later is swept too."""
    components = schema.get("components", {}).get("schemas", {})
    targets = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    targets.append((method, path, "path", param["name"]))
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body = components.get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
            targets += [(method, path, "body", field) for field in body.get("properties", {}) if field in NAME_FIELDS]
    return targets


def test_api_name_routes_refuse_hostile_names(api_url, runtime, models_root):
    user, admin = {"x-api-key": API_KEY}, {"x-api-key": ADMIN_KEY}
    schema = httpx.get(f"{api_url}/openapi.json", headers=user).json()
    targets = api_name_targets(schema)
    assert {("get", "/v1/models/{model_id}", "path", "model_id"), ("post", "/v1/chat/completions", "body", "model"),
            ("post", "/v1/internal/models/load", "body", "chat_template"), ("post", "/v1/embeddings", "body", "model"),
            ("post", "/api/chat", "body", "model"), ("post", "/api/generate", "body", "model"),
            ("post", "/api/show", "body", "name"), ("post", "/api/embed", "body", "model")} <= set(targets)
    before = tree(models_root, runtime.settings.user_data_dir)
    root = api_url.removesuffix("/v1")
    for method, path, where, field in targets:
        for name in HOSTILE_NAMES:
            url = root + (path.replace("{" + field + "}", quote(name, safe="")) if where == "path" else path)
            extra = OLLAMA_MINIMAL if path.startswith("/api/") else {}
            body = {**MINIMAL, **extra, field: name} if where == "body" else None
            if body is not None and field == "loras":
                body[field] = [name]
            response = httpx.request(method, url, headers=admin if "/internal/" in path else user, json=body)
            # 307: an empty path name; 415: a POST whose body is not JSON (a path name's
            # sweep sends none), refused before any route runs.
            refused = response.status_code in (307, 400, 404, 405, 415, 422)
            default = name == "" and (path, field) in EMPTY_MEANS_DEFAULT and response.status_code == 200
            # A ".." path segment is resolved by the client before sending: the request
            # goes to another route (/v1/vector_stores/../files is /v1/files), not this one.
            elsewhere = name == ".." and where == "path" and response.request.url.path != path.replace(
                "{" + field + "}", "..")
            assert refused or default or elsewhere, (method, path, field, name, response.status_code)
            assert "root:" not in response.text and "localhost" not in response.text
    assert tree(models_root, runtime.settings.user_data_dir) == before
    assert runtime.models.current.name == TINY
    assert httpx.get(f"{api_url}/models", headers=user).status_code == 200  # still serving


def test_gradio_file_routes_serve_no_models_user_data_or_dot_files(app_url, runtime, models_root):
    (runtime.settings.user_data_dir / "settings.yaml").write_text("listen_port: 7860\n")
    secret = PROJECT_ROOT / ".env"
    targets = [models_root / TINY / "config.json", runtime.settings.user_data_dir / "settings.yaml",
               PROJECT_ROOT / "pyproject.toml", secret, "/etc/passwd", "../../../../etc/passwd"]
    for target in targets:
        for route in ("gradio_api/file=", "file="):
            response = httpx.get(f"{app_url}{route}{target}")
            assert response.status_code in (403, 404), (route, target, response.status_code)
            assert "root:" not in response.text and "listen_port" not in response.text
