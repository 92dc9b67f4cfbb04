"""Turn a conversation into the prompt text for the next reply, in three modes.

- instruct: the model's chat template (or one chosen from instruction-templates/);
- chat: a character play script, "Name: text" lines after the character's text;
- chat-instruct: that script wrapped in an instruction of the model's template.

When the history does not fit the context, the oldest whole turns are left out (the
character and system text never are), and the caller is told how many.  Stop strings
that end a turn are read off the template itself, so every model family stops at its
own end-of-turn marker without a hand-written table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jinja2.exceptions import SecurityError, TemplateError

from webui.chat.characters import BUILT_IN, Character, Persona, describe, substitute
from webui.chat.group import as_spoken_to
from webui.chat.roleplay import Part, Roleplay, Woven, weave
from webui.chat.template_sandbox import render_chat_template, special_tokens
from webui.chat.thinking import thinking_format
from webui.generation.reasoning import ThinkingFormat
from webui.generation.request import EnginePrompt, PromptError, RenderedPrompt, prompt_ids

# For models that ship no template: a plain, widely understood ChatML layout.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# chat-instruct: the chat script, handed to an instruct model as one request.
DEFAULT_COMMAND = (
    'Continue the chat below. Write one reply for "<|character|>", in character, and nothing else.\n\n'
    "<|prompt|>"
)
# Private-use characters: never in real text, so they mark where content goes.
_MARK_A, _MARK_B = "\ue000", "\ue001"

Mode = Literal["chat", "chat-instruct", "instruct"]
Action = Literal["reply", "continue", "impersonate"]
Message = dict[str, str]  # role, content and, for a reply that thought, reasoning_content


@dataclass(frozen=True)
class ChatSetup:
    """How to prompt: everything but the conversation itself."""

    mode: Mode = "instruct"
    character: Character = field(default_factory=lambda: BUILT_IN)
    persona: Persona = field(default_factory=Persona)
    system: str = ""  # instruct mode's system message
    template: str | None = None  # an instruction template; None: the model's own
    command: str = DEFAULT_COMMAND
    # The template's thinking switches for this chat (enable_thinking, reasoning_effort).
    variables: Mapping[str, Any] = field(default_factory=dict)
    # A group chat's other members (webui/chat/group.py): their names end a reply too.
    others: tuple[str, ...] = ()
    # Lore, author's note and passages (webui/chat/roleplay.py); None: none of them.
    roleplay: Roleplay | None = None


@dataclass
class PromptInfo:
    """What rendering found; filled in on the model thread, read after the stream ends."""

    tokens: int = 0
    room: int = 0
    dropped: int = 0  # oldest messages left out to fit
    text: str = ""  # the prompt itself, and its inserted parts marked (the prompt inspector)
    parts: list[Part] = field(default_factory=list)


# -- templates ---------------------------------------------------------------------------
def fold_system(messages: list[Message]) -> list[Message]:
    """For templates that refuse a system role (Gemma's raise): prepend it to the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, message in enumerate(rest):
        if message["role"] == "user":
            rest[i] = {"role": "user", "content": prepend_text(f"{system}\n\n", message["content"])}
            return rest
    return [{"role": "user", "content": system}, *rest]


def _without_leading_replies(messages: list[Message]) -> list[Message]:
    """Templates that insist on user-first alternation reject a greeting-first chat."""
    head = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(head):]
    while rest and rest[0]["role"] == "assistant":
        rest = rest[1:]
    return head + rest


def apply_template(
    tokenizer, messages: Sequence[Message], system: str = "", template: str | None = None,
    add_generation_prompt: bool = True, variables: Mapping[str, Any] | None = None,
) -> str:
    """Render `messages` with `template` (default: the model's own, else ChatML).

    Templates render in a Jinja sandbox with a budget (webui/chat/template_sandbox.py):
    a template that tries to reach Python internals fails with SecurityError instead of
    running (docs/SECURITY.md), and one that loops, recurses or builds text without end
    is stopped with a PromptError (not retried).
    A template that refuses the system message or a reply-first history is retried
    with the system text folded into the first user turn / the leading replies left out.
    A reply's thinking goes to the template as `reasoning_content`: the template keeps or
    drops it (Qwen3's drops it from turns before the last question).  `variables`: the
    template's switches (webui/chat/thinking.py).
    """
    # A message with images is written as content parts, the form vision templates read.
    marker = getattr(tokenizer, "image_marker", None)
    turns = [{"role": m["role"], "content": content_parts(m, marker),
              **({"reasoning_content": m["reasoning_content"]} if m.get("reasoning_content") else {})}
             for m in messages]
    if system.strip():
        turns.insert(0, {"role": "system", "content": system.strip()})
    template = template or getattr(tokenizer, "chat_template", None) or FALLBACK_TEMPLATE
    attempts = [turns, fold_system(turns), _without_leading_replies(turns),
                fold_system(_without_leading_replies(turns))]
    last_error: Exception | None = None
    for attempt in _distinct(attempts):
        try:
            return render_chat_template(template, [dict(m) for m in attempt], tokens=special_tokens(tokenizer),
                                        add_generation_prompt=add_generation_prompt, variables=variables)
        except SecurityError as exc:
            raise PromptError("unsafe chat template: it tried to reach Python internals") from exc
        except TemplateError as exc:
            last_error = exc
    raise PromptError(f"the chat template failed: {last_error}")


def _distinct(attempts: list[list[Message]]) -> list[list[Message]]:
    """Each different attempt once, in order (content may be a list of parts: compared by repr)."""
    seen: dict[str, list[Message]] = {}
    for attempt in attempts:
        seen.setdefault(repr([sorted(m.items()) for m in attempt]), attempt)
    return list(seen.values())


def render_chat_prompt(tokenizer, history: Sequence[Message], system: str = "",
                       variables: Mapping[str, Any] | None = None) -> str:
    """The prompt for the next assistant turn with the model's own template."""
    return apply_template(tokenizer, history, system, variables=variables)


def turn_prefix(tokenizer, template: str | None, history: Sequence[Message], role: str) -> str:
    """The text that opens a new `role` turn after `history` (e.g. for impersonation)."""
    text = apply_template(tokenizer, [*history, {"role": role, "content": _MARK_A}], template=template,
                          add_generation_prompt=False)
    if _MARK_A not in text:
        raise PromptError("the chat template drops message text; cannot write a turn for that role")
    return text[: text.index(_MARK_A)]


def turn_end_stops(tokenizer, template: str | None, role: str) -> tuple[str, ...]:
    """Stop strings for the end of a `role` turn, read off the template.

    Renders a tiny chat with marked contents and takes what comes between the end of
    a `role` message and the start of the next one: e.g. "<|im_end|>" and
    "<|im_start|>user" for ChatML, "<end_of_turn>" for Gemma.
    """
    other = "user" if role == "assistant" else "assistant"
    messages = [{"role": "user", "content": "Hi"}] if role == "assistant" else []
    messages += [{"role": role, "content": _MARK_A}, {"role": other, "content": _MARK_B}]
    try:
        text = apply_template(tokenizer, messages, template=template, add_generation_prompt=False)
        between = text[text.index(_MARK_A) + 1 : text.index(_MARK_B)]
    except (PromptError, ValueError):
        return ()
    # The first marker-like piece ("<|eot_id|>", "</s>", "<end_of_turn>") is the end
    # of the turn itself; the lines after it open the next turn.
    first_marker = re.match(r"\s*(<[^<>\s]{1,40}>|\[[^\[\]\s]{1,40}\])", between)
    candidates = [between.strip(), *(line.strip() for line in between.splitlines())]
    if first_marker:
        candidates.insert(0, first_marker.group(1))
    return tuple(dict.fromkeys(c for c in candidates if len(c) >= 2))


# -- the three modes ---------------------------------------------------------------------
class ChatPrompt:
    """The prompt for one action on a conversation, rendered on the model thread.

    Called by the engine as prompt(tokenizer, room): `room` is how many prompt tokens
    fit beside the reply.  Leaves what it did in `info`.
    """

    def __init__(self, setup: ChatSetup, turns: Sequence[Message], action: Action = "reply", prefix: str = "",
                 bot_prefix: Callable[[str], str] | None = None, tools: Sequence[Any] = ()):
        """tools: the webui/chat/tools.py Tools offered to this reply (instruct mode)."""
        if action == "continue" and (not turns or turns[-1]["role"] != "assistant"):
            raise PromptError("there is no reply to continue")
        self.setup = setup
        self.turns = [dict(m) for m in turns]  # a snapshot: the caller may go on editing
        self.action = action
        self.prefix = prefix
        self.info = PromptInfo()
        # Extensions' bot_prefix_modifier: may rewrite what opens the reply.  Called
        # once per distinct opener, though truncation renders several candidates.
        self._bot_prefix = bot_prefix
        self._openers: dict[str, str] = {}
        self.tools = tuple(tools)
        self.woven: Woven | None = None  # lore picked once per reply, however often it renders

    def _weave(self, count) -> Woven:
        if self.woven is None:
            self.woven = weave(self.setup.roleplay, self.turns, self.names, count)
        return self.woven

    def _done(self, info: PromptInfo, text: str, count) -> PromptInfo:
        info.text, info.parts = text, self._weave(count).parts(text, count)
        return info

    def _open_reply(self, opener: str) -> str:
        if self._bot_prefix is None:
            return opener
        if opener not in self._openers:
            self._openers[opener] = self._bot_prefix(opener)
        return self._openers[opener]

    @property
    def names(self) -> tuple[str, str]:
        return self.setup.persona.name, self.setup.character.name

    def __call__(self, tokenizer, room: int) -> RenderedPrompt:
        starts = self._drop_points()
        count = lambda text: len(prompt_ids(tokenizer, text))  # noqa: E731
        self._weave(count)
        if self.setup.mode != "instruct" and images_of(self.turns):
            raise PromptError("images are read in instruct mode, where the model's own template places them: "
                              "switch the chat mode to instruct", param="mode")
        whole = self._render(tokenizer, 0)
        tokens = count(whole)
        thinking = self._thinking(tokenizer)
        if tokens <= room or len(starts) == 1:  # the usual case: everything fits
            self.info = self._done(PromptInfo(tokens=tokens, room=room), whole, count)
            return RenderedPrompt(whole, self._stops(tokenizer), thinking, images=images_of(self.turns))
        # Fewest dropped turns that fit: token counts fall as turns are dropped.
        low, high = 1, len(starts) - 1
        best, best_start = self._render(tokenizer, starts[high]), starts[high]
        while low <= high:
            middle = (low + high) // 2
            text = self._render(tokenizer, starts[middle])
            if count(text) <= room:
                best, best_start, high = text, starts[middle], middle - 1
            else:
                low = middle + 1
        self.info = self._done(PromptInfo(tokens=count(best), room=room, dropped=best_start), best, count)
        return RenderedPrompt(best, self._stops(tokenizer), thinking,
                              images=images_of(self.turns[best_start:]))

    def _thinking(self, tokenizer) -> ThinkingFormat | None:
        """The reply's thinking markers: the template's, where the template prompts it
        (chat mode's script is plain text: a reply there is all answer)."""
        if self.setup.mode == "chat" or self.action == "impersonate":
            return None
        return thinking_format(self.setup.template or getattr(tokenizer, "chat_template", None), tokenizer)

    def for_engine(self) -> EnginePrompt | None:
        """This prompt for an engine that applies its own chat template (a remote one):
        an instruct reply as messages; chat mode's script (any action) as text to continue,
        ending the turn at the next speaker's name; chat-instruct's instruction as one user
        message.  None where our template is needed: continue, impersonate or a reply
        prefix in instruct mode, and continue or a prefix in chat-instruct mode.
        The whole history is sent: the engine knows its context and refuses what does not fit."""
        user, char = self.names
        names = (f"\n{user}:", f"\n{char}:", *(f"\n{other}:" for other in self.setup.others))
        woven = self._weave(lambda text: len(text) // 4 + 1)  # no tokenizer here: a rough count for the budget
        if self.setup.mode != "instruct" and images_of(self.turns):  # never dropped from a script
            raise PromptError("images are read in instruct mode, where the model's own template places them: "
                              "switch the chat mode to instruct", param="mode")
        if self.setup.mode == "instruct":
            if self.action != "reply" or self.prefix or self._bot_prefix:
                return None
            turns = [{k: v for k, v in m.items() if k != "inserted"} for m in woven.into(as_spoken_to(self.turns, char))]
            return EnginePrompt(messages=tuple(_with_system(turns, woven.around(self.setup.system))))
        script = self._script(self.turns)
        if self.setup.mode == "chat":
            return EnginePrompt(text=script, stops=names)
        if self.action == "continue" or self.prefix or self._bot_prefix:
            return None
        return EnginePrompt(messages=({"role": "user", "content": self._command(script)},), stops=names)

    def _drop_points(self) -> list[int]:
        """Where the kept history may start: at 0 or at a user message, never past the
        message being answered (or continued)."""
        last = len(self.turns) - 1 if self.action == "continue" else max(
            (i for i, m in enumerate(self.turns) if m["role"] == "user"), default=len(self.turns)
        )
        return [0, *(i for i, m in enumerate(self.turns) if m["role"] == "user" and 0 < i <= last)]

    def _render(self, tokenizer, start: int) -> str:
        turns = self.turns[start:]
        if self.setup.mode == "instruct":
            return self._instruct(tokenizer, turns)
        script = self._script(turns)
        if self.setup.mode == "chat":
            return script
        return self._chat_instruct(tokenizer, script)

    def _instruct(self, tokenizer, turns: list[Message]) -> str:
        turns = as_spoken_to(turns, self.setup.character.name)  # a group's other members: named user turns
        woven = self.woven or Woven()
        woven_turns = woven.into(turns, self.action == "continue")
        try:
            return self._instruct_turns(tokenizer, woven_turns, woven.around(self.setup.system))
        except PromptError:
            if woven_turns is turns:
                raise
            # A template that refuses a message where the lore or note went: joined to the next one.
            return self._instruct_turns(tokenizer, woven.merged(woven_turns), woven.around(self.setup.system))

    def _instruct_turns(self, tokenizer, turns: list[Message], system: str) -> str:
        template, variables = self.setup.template, self.setup.variables
        if any(m["role"] == "tool" or m.get("tool_calls") for m in turns) or self.tools:
            from webui.chat.tools import as_plain_turns, render_with_tools

            if self.action == "reply" and self._bot_prefix is None:
                # Tools offered and earlier calls and results, as the template has them (webui/chat/tools.py).
                return render_with_tools(tokenizer, _with_system(turns, system), self.tools, template,
                                         variables=variables) + self.prefix
            turns = as_plain_turns(turns)  # the other actions: calls and results as text
        if self.action == "continue":
            head = apply_template(tokenizer, turns[:-1], system, template, variables=variables)
            return head + self._reopened(tokenizer, head, turns[-1])
        if self.action == "impersonate":
            return turn_prefix(tokenizer, template, _with_system(turns, system), "user") + self.prefix
        full = apply_template(tokenizer, turns, system, template, variables=variables)
        if self._bot_prefix is None:
            return full + self.prefix
        # The reply's opener is what the generation prompt adds to the history.
        base = apply_template(tokenizer, turns, system, template, add_generation_prompt=False, variables=variables)
        if not full.startswith(base):
            return full + self.prefix
        return base + self._open_reply(full[len(base):] + self.prefix)

    def _reopened(self, tokenizer, head: str, turn: Message) -> str:
        """The reply being continued, with its thinking written back before its answer as
        the model wrote it, so the model goes on from where it stopped: in its thinking
        when the answer had not started (the engine then reads the reply as starting
        inside the thinking), else in its answer."""
        reasoning = turn.get("reasoning_content") or ""
        fmt = self._thinking(tokenizer) if reasoning else None
        if fmt is None:
            return turn["content"]
        opened = "" if fmt.ends_open(head) else fmt.open + ("" if fmt.answer else "\n")
        if not turn["content"]:
            return opened + reasoning
        return opened + reasoning + fmt.closing_text() + turn["content"]

    def _script(self, turns: list[Message]) -> str:
        """The chat-mode text: character text, examples, then "Name: text" lines, ending
        with the name of whoever speaks next."""
        user, char = self.names
        woven = self.woven or Woven()
        lines = [woven.around(describe(self.setup.character, self.setup.persona))]
        lines.append(woven.around_examples(substitute(self.setup.character.example_dialogue.strip(), char, user)))
        head = "\n\n".join(line for line in lines if line)
        turns = woven.into(turns, self.action == "continue")
        # Inserted lore goes in as written; a group chat's replies carry their speaker's
        # name (webui/chat/group.py).
        body = "".join(f"{m['content']}\n" if m.get("inserted") else f"{_speaker(m, user, char)}: {_line(m)}\n"
                       for m in turns)
        if self.action == "continue":
            body = body[:-1] if body.endswith("\n") else body
            if not turns[-1]["content"].strip():
                body = body.rstrip()
            return (head + "\n\n" if head else "") + body
        speaker = user if self.action == "impersonate" else char
        opener = f"{speaker}:" + (f" {self.prefix.lstrip()}" if self.prefix else "")
        if self.action == "reply":
            opener = self._open_reply(opener)
        return (head + "\n\n" if head else "") + body + opener

    def _command(self, script: str) -> str:
        """chat-instruct's instruction: the script up to its final line (the speaker's
        name, or the reply being continued), inside the command text."""
        user, char = self.names
        speaker = user if self.action == "impersonate" else char
        body = script.rpartition("\n")[0]
        return self.setup.command.replace("<|character|>", speaker).replace("<|prompt|>", body.rstrip())

    def _chat_instruct(self, tokenizer, script: str) -> str:
        opening = apply_template(tokenizer, [{"role": "user", "content": self._command(script)}], "",
                                 self.setup.template, variables=self.setup.variables)
        return opening + script.rpartition("\n")[2]

    def _stops(self, tokenizer) -> tuple[str, ...]:
        user, char = self.names
        role = "user" if self.action == "impersonate" else "assistant"
        stops: tuple[str, ...] = ()
        if self.setup.mode != "chat":
            stops += turn_end_stops(tokenizer, self.setup.template, role)
        if self.setup.mode != "instruct":
            stops += (f"\n{user}:", f"\n{char}:", *(f"\n{other}:" for other in self.setup.others))
        return tuple(dict.fromkeys(stops))


def _speaker(message: Message, user: str, char: str) -> str:
    if message["role"] == "user":
        return user
    return (message.get("name") if message["role"] == "assistant" else None) or char


def _line(message: Message) -> str:
    """A message's text in a chat-mode script (a tool's result named as one)."""
    if message["role"] == "tool":
        return f"[{message.get('name', 'tool')} returned: {message['content'].strip()}]"
    return message["content"].strip()


def _with_system(turns: list[Message], system: str) -> list[Message]:
    return [{"role": "system", "content": system.strip()}, *turns] if system.strip() else turns


# -- images ----------------------------------------------------------------------------------
def content_parts(message: Message, marker: str | None = None) -> str | list[dict]:
    """A message's content for a template: its text, or with images (a message's
    "images": checked ImageInputs, webui/images.py) one image part each and then the text.
    With a `marker` (a GGUF model's, webui/loaders/gguf_tokenizer.py) each image is a text
    part holding it: llama.cpp finds the images by that text and wraps them itself."""
    images = message.get("images") or ()
    if not images:
        return message["content"]
    image = {"type": "text", "text": marker} if marker else {"type": "image"}
    return [*(dict(image) for _ in images), {"type": "text", "text": message["content"]}]


def prepend_text(prefix: str, content: str | list[dict]) -> str | list[dict]:
    if isinstance(content, str):
        return prefix + content
    return [{"type": "text", "text": prefix.rstrip("\n")}, *content]


def images_of(turns: Sequence[Message]) -> tuple:
    """The images of `turns`, in the order the template places them."""
    return tuple(image for m in turns for image in (m.get("images") or ()))
