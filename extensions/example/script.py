"""Template extension: every hook, each doing something small and visible.

Copy this folder to user_data/extensions/<your_name>/ and delete what you do not
need.  Everything here is plain Text Generation WebUI style (no imports from webui
needed) except the registration hooks at the end, which are this app's own.
Documentation of every hook: docs/EXTENSIONS.md.

Enable it with `--extensions example`.
"""

import gradio as gr

params = {
    "display_name": "Example",
    "is_tab": False,  # True: a tab of its own; False: a block under the chat
    "prefix": "",  # overridable in settings.yaml as  example-prefix: "..."
    "suffix": "",
    "bot_prefix": "",
    "ban_token_id": -1,  # a token id its logits processor forbids (-1: none)
    "canned_reply": "",  # when set, custom_generate_reply answers this instead of the model
}


def setup():
    """Runs once at load, before any other hook: open files, check settings, ..."""


def ui():
    """Components under the chat (is_tab False) or in a tab of their own."""
    with gr.Accordion("Example extension", open=False):
        suffix = gr.Textbox(value=params["suffix"], label="Suffix added to every reply")
        suffix.change(lambda value: params.update(suffix=value), suffix, None, api_name="example_suffix")


def custom_css():
    return ".example-extension { border: 1px dashed gray; }"


def custom_js():
    return "console.log('example extension loaded');"


def input_modifier(string, state, is_chat=False):
    return params["prefix"] + string


def output_modifier(string, state, is_chat=False):
    return string + params["suffix"]


def chat_input_modifier(text, visible_text, state):
    return params["prefix"] + text, visible_text


def bot_prefix_modifier(string, state):
    return string + params["bot_prefix"]


def state_modifier(state):
    """May change the request's values (state["max_new_tokens"], state["temperature"], ...)."""
    return state


def history_modifier(history):
    return history


def custom_generate_chat_prompt(user_input, state, **kwargs):
    """Return a prompt string to build the chat prompt yourself, or None to leave it."""
    return None


def custom_tokenized_length(prompt):
    """Return a token count to override the tokenizer's, or None."""
    return None


def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    return prompt, input_ids, input_embeds


class _BanOne:
    """A logits processor: a callable (input_ids, scores) -> scores."""

    def __init__(self, token_id):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        scores[:, self.token_id] = -float("inf")
        return scores


def logits_processor_modifier(processor_list, input_ids):
    if params["ban_token_id"] >= 0:
        processor_list.append(_BanOne(params["ban_token_id"]))


def custom_generate_reply(question, original_question, seed, state, stopping_strings, is_chat=False):
    """Generate the reply yourself, yielding the reply so far; yield nothing to let the model answer."""
    if params["canned_reply"]:
        words = params["canned_reply"].split(" ")
        for n in range(1, len(words) + 1):
            yield " ".join(words[:n])


# -- this app's registration hooks --------------------------------------------------------


def register_tabs(register):

    def render(runtime):
        gr.Markdown(f"Extensions loaded: {', '.join(runtime.extensions.names())}")

    register("Example tab", render)


def register_api_routes(register):

    def hello():
        return {"extension": "example", "hello": "world"}

    register("/hello", hello)


def register_loaders(register):
    """Call register(loader) with a webui.loaders.base.Loader to add a model format."""
    return None
