"""Which extension hooks run, and in what order, in each flow: the one place that says so.

docs/EXTENSIONS.md ("Which hooks run where") shows this table row for row, and
tests/test_hook_order.py checks both that the page says the same and that the chat,
the Notebook and the API really call the hooks in this order.  A change to a flow
starts here.
"""

from __future__ import annotations

# What runs inside "the model" of every flow (on the model's thread, per request).
MODEL = ("tokenizer_modifier", "logits_processor_modifier")

FLOWS: dict[str, tuple[str, ...]] = {
    "start-up": ("setup", "register_loaders", "ui", "register_tabs", "custom_css", "custom_js",
                 "register_api_routes"),
    # custom_generate_reply, when an extension has it, writes the reply instead of the model.
    "Notebook": ("state_modifier", "input_modifier", "custom_generate_reply", *MODEL, "output_modifier"),
    "every request to the model (chat, Notebook, API)": MODEL,
    "Count tokens": ("custom_tokenized_length",),
    "API (`/v1/chat/completions`, `/v1/completions`)": ("input_modifier", *MODEL, "output_modifier"),
    "chat: Send": ("state_modifier", "chat_input_modifier", "input_modifier"),
    # custom_generate_chat_prompt returns a prompt, or None for the template (which
    # calls bot_prefix_modifier on what opens the reply).
    "chat: each reply (Send, Regenerate, Continue)": ("state_modifier", "history_modifier",
                                                      "custom_generate_chat_prompt", "bot_prefix_modifier",
                                                      *MODEL, "output_modifier"),
    "chat: Impersonate": ("state_modifier", *MODEL),
}
