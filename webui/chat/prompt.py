"""Render a conversation with the model's chat template (instruct mode)."""

from __future__ import annotations

from collections.abc import Sequence

from jinja2.exceptions import SecurityError, TemplateError

# For models that ship no template: a plain, widely understood ChatML layout.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class PromptError(ValueError):
    pass


Message = dict[str, str]


def fold_system(messages: list[Message]) -> list[Message]:
    """For templates that refuse a system role (Gemma's raise): prepend it to the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, message in enumerate(rest):
        if message["role"] == "user":
            rest[i] = {"role": "user", "content": f"{system}\n\n{message['content']}"}
            return rest
    return [{"role": "user", "content": system}, *rest]


def render_chat_prompt(tokenizer, history: Sequence[Message], system: str = "") -> str:
    """The prompt text for the next assistant turn.

    transformers renders templates in a Jinja sandbox, so a template that tries to
    reach Python internals fails with SecurityError instead of running (HOSTILE.md 7).
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    if system.strip():
        messages.insert(0, {"role": "system", "content": system.strip()})
    template = getattr(tokenizer, "chat_template", None) or FALLBACK_TEMPLATE
    attempts = [messages, fold_system(messages)] if system.strip() else [messages]
    last_error: Exception | None = None
    for attempt in attempts:
        try:
            return tokenizer.apply_chat_template(
                attempt, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        except SecurityError as exc:
            raise PromptError("unsafe chat template: it tried to reach Python internals") from exc
        except TemplateError as exc:
            last_error = exc
    raise PromptError(f"the chat template failed: {last_error}")
