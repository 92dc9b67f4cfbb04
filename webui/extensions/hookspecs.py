"""Every extension hook, with its exact signature.

The names and leading arguments are Text Generation WebUI's, so an extension written
for it that uses only these hooks runs unmodified.  Two ways to implement a hook:

* a plain module-level function with the hook's name (Text Generation WebUI style).
  It is called *positionally* with the first N arguments of the signature below,
  where N is how many positional parameters it takes, up to `TGW_ARITY` (so
  `input_modifier(string)`, `input_modifier(string, state)` and
  `input_modifier(text, state, is_chat)` all work, whatever the names);
* a function marked `@webui.extensions.hookimpl` (pluggy style): called by keyword,
  with any subset of the arguments below by name, including the extra ones past
  Text Generation WebUI's (`tokenizer`, `state` on the logits hook).

What each hook may return is checked: a wrong type marks the extension faulty and
the value passes on unmodified.  docs/EXTENSIONS.md documents every hook; a test
compares that page with the signatures here.
"""

from __future__ import annotations

import pluggy

PROJECT = "webui"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# How many leading arguments a Text Generation WebUI-style (positional) function may
# take; the rest of a signature is for keyword-style (@hookimpl) implementations.
TGW_ARITY = {
    "logits_processor_modifier": 2,
}

# Hooks where the first extension (in the configured order) that answers wins.
OVERRIDE_HOOKS = ("custom_generate_chat_prompt", "custom_generate_reply", "custom_tokenized_length")


# -- start-up and page ------------------------------------------------------------------


@hookspec
def setup():
    """Once, when the extension is loaded at start-up, before any other hook."""


@hookspec
def ui():
    """Build Gradio components: in a tab of its own (params["is_tab"]) or under the chat."""


@hookspec
def custom_css():
    """CSS for the page, as a string."""


@hookspec
def custom_js():
    """JavaScript run when the page loads, as a string of code."""


# -- text modifiers (chained in the configured order) -----------------------------------


@hookspec
def input_modifier(string, state, is_chat):
    """The user's text before it is used (Notebook: the whole prompt). Returns str."""


@hookspec
def output_modifier(string, state, is_chat):
    """The model's finished reply before it is shown. Returns str."""


@hookspec
def chat_input_modifier(text, visible_text, state):
    """The chat message: text for the model and text to show. Returns (text, visible_text)."""


@hookspec
def bot_prefix_modifier(string, state):
    """The start of the assistant's turn in the chat prompt. Returns str."""


@hookspec
def state_modifier(state):
    """The request's state dict (generation parameters and more). Returns a dict."""


@hookspec
def history_modifier(history):
    """The chat history before the prompt is built. Returns the same type."""


# -- overrides (first wins) ------------------------------------------------------------


@hookspec(firstresult=True)
def custom_generate_chat_prompt(user_input, state, **kwargs):
    """Build the whole chat prompt yourself. Returns str, or None to decline."""


@hookspec(firstresult=True)
def custom_generate_reply(question, original_question, seed, state, stopping_strings, is_chat):
    """Generate the reply yourself: a generator yielding the reply so far (str)."""


@hookspec(firstresult=True)
def custom_tokenized_length(prompt):
    """How many tokens `prompt` counts as. Returns int (>= 0), or None to decline."""


# -- model input and sampling ------------------------------------------------------------


@hookspec
def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    """The tokenized prompt. Returns (prompt, input_ids, input_embeds)."""


@hookspec
def logits_processor_modifier(processor_list, input_ids, tokenizer, state):
    """Add logits processors for this request: change the list in place (or return one)."""


# -- registration (native extensions; the llm/datasette register(...) pattern) ---------


@hookspec
def register_loaders(register):
    """Call register(loader) for each model loader (webui.loaders.base.Loader) you add."""


@hookspec
def register_api_routes(register):
    """Call register(path, endpoint, methods=("GET",)); served at /v1/extensions/<name><path>."""


@hookspec
def register_tabs(register):
    """Call register(title, render); render(runtime) builds the tab's components."""
