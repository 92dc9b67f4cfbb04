"""Text Generation WebUI's chat fields on /v1/chat/completions: the chat tab's prompt.

A request that sends any of `mode`, `character`, `user_name` (`name1`), `bot_name`
(`name2`), `context`, `greeting`, `user_bio`, `chat_instruct_command`,
`instruction_template` or `continue` is prompted as the chat tab prompts a conversation
(webui/chat/prompt.py's ChatPrompt, the same setup the tab builds in
webui/chat/actions.py): the character's card, the persona, the mode's layout, its stop
strings, the oldest turns left out when the history does not fit.  So a client and the
chat tab give the model the same prompt for the same history, and whatever the chat's
prompt gains (lore, an author's note) reaches API clients too.

Characters are the server owner's (user_data/characters/: YAML, or a V2/V3 card saved as
JSON); a name not there is a 400 naming `character`.  The request's fields override the
card's as Text Generation WebUI's do.  System messages are the instruct mode's system
prompt (the chat tab's "System prompt"); an assistant message's `name` is its speaker
(a group chat's member, webui/chat/group.py).  With no reply in `messages` the
character's greeting opens the history, as it opens a new chat in the tab.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from webui.api.errors import APIError
from webui.api.schemas import ChatCompletionRequest
from webui.chat import roleplay
from webui.chat.characters import DEFAULT_CHARACTER, substitute
from webui.chat.prompt import DEFAULT_COMMAND, ChatPrompt, ChatSetup, PromptError
from webui.chat.thinking import variables_for
from webui.chat.tools import Tool
from webui.errors import AppError
from webui.generation.params import SamplingParams
from webui.generation.request import EnginePrompt, RenderedPrompt, prompt_room
from webui.loaders.base import LoadedModel
from webui.remote.engine import RemoteModel
from webui.runtime import Runtime


def chat_setup(runtime: Runtime, body: ChatCompletionRequest) -> ChatSetup:
    """The chat tab's setup for this request: the mode, the character (with the request's
    overrides), the persona, the template and the chat-instruct command."""
    space = runtime.users.get(None)  # the owner's characters and persona: user_data/ itself
    try:
        character = space.characters.load(body.character or DEFAULT_CHARACTER)
    except (AppError, ValueError) as exc:
        raise APIError(400, f"character: {exc}", param="character", code="invalid_value") from exc
    changes: dict[str, Any] = {}
    if body.bot_name is not None:
        changes["name"] = body.bot_name
    if body.context is not None:
        changes["context"] = body.context
    if body.greeting is not None:
        changes.update(greeting=body.greeting, alternate_greetings=[])
    if changes:
        character = character.model_copy(update=changes)
    persona = space.persona()
    if body.user_name is not None or body.user_bio is not None:
        persona = persona.model_copy(update={k: v for k, v in (("name", body.user_name),
                                                                ("description", body.user_bio)) if v is not None})
    try:
        template = runtime.templates.load(body.instruction_template)
    except (AppError, ValueError) as exc:
        raise APIError(400, f"instruction_template: {exc}", param="instruction_template",
                       code="invalid_value") from exc
    system = "\n\n".join(m.text() for m in body.messages if m.role in ("system", "developer"))
    return ChatSetup(mode=body.mode or "instruct", character=character, persona=persona, system=system,
                     template=template, command=body.chat_instruct_command or DEFAULT_COMMAND)


def turns_of(setup: ChatSetup, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the chat keeps it: no system turns (they are the setup's), the
    greeting first when no reply is in it yet."""
    turns = [m for m in messages if m["role"] != "system"]
    greeting = next(iter(setup.character.greetings()), None)
    if greeting is not None and not any(m["role"] == "assistant" for m in turns):
        turns.insert(0, {"role": "assistant",
                         "content": substitute(greeting, setup.character.name, setup.persona.name)})
    return turns


def chat_prompt(runtime: Runtime, body: ChatCompletionRequest, model: LoadedModel | RemoteModel,
                messages: list[dict[str, Any]], tools: tuple[Tool, ...],
                params: SamplingParams) -> RenderedPrompt | EnginePrompt:
    """The prompt the chat tab would build for `messages` (checked OpenAI messages, the
    last user message already through the extensions' input hook)."""
    setup = chat_setup(runtime, body)
    if tools and setup.mode != "instruct":
        raise APIError(400, f"tools are offered in instruct mode only; this request's mode is {setup.mode}",
                       param="tools", code="unsupported_parameter")
    remote = isinstance(model, RemoteModel)
    template = setup.template if remote else (setup.template or getattr(model.tokenizer, "chat_template", None))
    ask = body.thinking()
    variables = variables_for(template, ask.enable, ask.effort, ask.template_kwargs)
    if variables:
        setup = dataclasses.replace(setup, variables=variables)
    action = "continue" if body.continue_ else "reply"
    turns = turns_of(setup, messages)
    # The lore a chat with this character reads (its card's book, the books used in all
    # chats or with it), as the chat tab adds it; seeded by the history.
    seed = hashlib.sha256(repr([(m["role"], m.get("content")) for m in turns]).encode()).hexdigest()[:16]
    lore = roleplay.for_request(runtime.users.get(None), setup.character, body.character or DEFAULT_CHARACTER, seed)
    setup = dataclasses.replace(setup, roleplay=lore)
    try:
        prompt = ChatPrompt(setup, turns, action, tools=tools)
    except PromptError as exc:
        raise APIError(400, f"continue: {exc}", param="continue", code="invalid_value") from exc
    if remote:
        sent = prompt.for_engine()
        if sent is None:
            raise APIError(400, f"a remote engine's model cannot take this {setup.mode} request (continue, or an "
                                "instruction template of ours): its engine applies its own template",
                           param="mode", code="unsupported_parameter")
        return sent
    context = min(params.truncation_length or model.context_length, model.context_length)
    try:
        return prompt(model.tokenizer, prompt_room(params.max_new_tokens, context))
    except PromptError as exc:
        exc.blame("messages")
        raise
