"""Thinking, told apart from the answer in a reply's text.

Models that think write their reasoning between markers before the answer: `<think>` …
`</think>` (Qwen3, QwQ, the DeepSeek-R1 distills, Phi-4-reasoning), `[THINK]` … `[/THINK]`
(Magistral), or gpt-oss's channels (`<|channel|>analysis<|message|>` … `<|end|>`, then
`<|start|>assistant<|channel|>final<|message|>` and the answer).  Some templates open the
thinking in the prompt itself, so the reply holds only the closing marker.

`ThinkingFormat` names a model's markers (webui/chat/thinking.py reads them off its chat
template); `ReasoningParser` splits a reply streamed piece by piece into thinking and
answer, holding back only what could still become a marker, so the pieces it gives add up
to what `split()` gives for the whole text.  `ThinkingGate` follows the same reply token by
token inside the engine: it counts thinking tokens for a budget, and tells the engine when
the answer starts (a grammar constrains the answer, not the thinking).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Part = Literal["thinking", "answer"]


@dataclass(frozen=True)
class ThinkingFormat:
    """A model's thinking markers.

    open/close: the text around the thinking.  answer: the text that opens the answer
    after the thinking closes (gpt-oss's final channel; empty for tag pairs).  between:
    what starts the next message between the two (gpt-oss's `<|start|>assistant`), part
    of neither.  starts_open: the prompt already opened the thinking (its generation
    prompt ends inside an open block), so the reply starts in it.
    """

    open: str = "<think>"
    close: str = "</think>"
    answer: str = ""
    between: str = ""
    starts_open: bool = False

    def opened(self, starts_open: bool) -> ThinkingFormat:
        return replace(self, starts_open=starts_open)

    @property
    def skipped(self) -> tuple[str, ...]:
        return (self.between,) if self.between else ()

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(m for m in (self.open, self.close, self.answer, self.between) if m)

    def ends_open(self, prompt: str) -> bool:
        """Whether `prompt` leaves a thinking block open (its last open marker is after
        its last close marker): the reply then starts inside the thinking."""
        last_open = prompt.rfind(self.open)
        return last_open >= 0 and last_open > prompt.rfind(self.close)

    def closing_text(self) -> str:
        """What ends the thinking and starts the answer, for a budget that runs out."""
        return ("\n" + self.close + "\n\n") if not self.answer else self.close + self.between + self.answer


# gpt-oss (the "harmony" format): the thinking is the analysis channel's message.
HARMONY = ThinkingFormat(open="<|channel|>analysis<|message|>", close="<|end|>",
                         answer="<|channel|>final<|message|>", between="<|start|>assistant")


@dataclass(frozen=True)
class Piece:
    part: Part
    text: str


class ReasoningParser:
    """Splits a streamed reply into thinking and answer pieces.

    Only the first thinking block counts as thinking: a marker the answer mentions later
    is the answer's text.  Whitespace right after a marker and at the end of the thinking
    is dropped (it is the template's layout, not the model's words)."""

    def __init__(self, fmt: ThinkingFormat, resume: bool = False):
        """resume: the reply goes on from thinking already written (a continued reply):
        its leading whitespace is the model's own, kept."""
        self.fmt = fmt
        self.part: Part = "thinking" if fmt.starts_open else "answer"
        self.thought = fmt.starts_open  # a thinking block was opened (its close ends thinking for good)
        self.closed = False
        self._buffer = ""
        self._trim = fmt.starts_open and not resume  # drop leading whitespace of the part just entered
        self._pending_space = ""  # trailing whitespace of the thinking, kept until more follows
        # Harmony: what comes before the final channel opens is dropped, not answered.
        self._await_answer = False

    def _markers(self) -> tuple[str, ...]:
        if self.closed:
            return (self.fmt.answer, *self.fmt.skipped) if self._await_answer and self.fmt.answer else ()
        if self.part == "thinking":
            return (self.fmt.close,)
        return tuple(m for m in (self.fmt.open, self.fmt.answer, *self.fmt.skipped) if m)

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        out: list[Piece] = []
        while True:
            markers = self._markers()
            hits = [(self._buffer.find(m), -len(m), m) for m in markers if m and m in self._buffer]
            if not hits:
                break
            at, _, marker = min(hits)
            self._emit(self._buffer[:at], out)
            self._buffer = self._buffer[at + len(marker):]
            self._on_marker(marker)
        keep = _partial_suffix(self._buffer, self._markers())
        self._emit(self._buffer[: len(self._buffer) - keep], out)
        self._buffer = self._buffer[len(self._buffer) - keep:]
        return out

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        self._emit(self._buffer, out)
        self._buffer = ""
        return out

    def _on_marker(self, marker: str) -> None:
        fmt = self.fmt
        if self.part == "thinking" and marker == fmt.close:
            self.part, self.closed, self._pending_space, self._trim = "answer", True, "", True
            self._await_answer = bool(fmt.answer)
        elif marker == fmt.open and not self.thought:
            self.part, self.thought, self._trim = "thinking", True, True
        elif marker == fmt.answer:
            self._await_answer, self._trim = False, True
        # skipped markers (and an open marker after the thinking) vanish

    def _emit(self, text: str, out: list[Piece]) -> None:
        if self._await_answer:
            return  # between gpt-oss's analysis and final channels
        if self._trim:
            stripped = text.lstrip()
            if not stripped:
                return
            text, self._trim = stripped, False
        if self.part == "thinking":
            body = text.rstrip()
            if body:
                out.append(Piece("thinking", self._pending_space + body))
                self._pending_space = text[len(body):]
            else:
                self._pending_space += text
            return
        if text:
            if out and out[-1].part == "answer":
                out[-1] = Piece("answer", out[-1].text + text)
            else:
                out.append(Piece("answer", text))


def _partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the start of a marker.  Runs once per
    streamed piece: only the places in the end of `text` where a marker's first character
    stands are tried (usually none), not every length (bench/bench_thinking.py)."""
    best = 0
    for marker in markers:
        if not marker:
            continue
        at = text.find(marker[0], max(len(text) - len(marker) + 1, 0))
        while at != -1 and len(text) - at > best:
            if marker.startswith(text[at:]):
                best = len(text) - at
                break
            at = text.find(marker[0], at + 1)
    return best


def split(text: str, fmt: ThinkingFormat | None) -> tuple[str, str]:
    """(thinking, answer) of a whole reply; the same as its streamed pieces joined."""
    if fmt is None:
        return "", text
    parser = ReasoningParser(fmt)
    pieces = parser.feed(text) + parser.finish()
    thinking = "".join(p.text for p in pieces if p.part == "thinking")
    answer = "".join(p.text for p in pieces if p.part == "answer")
    return thinking, answer


class ThinkingGate:
    """A reply's thinking followed token by token on the model thread.

    Fed each token's text (before stop strings hold anything back).  `answering` turns
    true once the thinking has closed (or at once, when the reply does not think); `budget`
    thinking tokens later, `closing` is the text to force in to end the thinking.
    With `force_open` (a grammar waits for the answer) a reply that has not opened its
    thinking is made to, so a grammar never meets a thinking marker."""

    def __init__(self, fmt: ThinkingFormat, budget: int = -1, force_open: bool = False):
        self.fmt = fmt
        self.budget = budget
        self.thinking = fmt.starts_open
        self.answering = False
        self.tokens = 0  # thinking tokens so far, after the open marker (the budget counts these)
        self.opened_here = False  # the reply wrote the open marker itself
        self._tail = ""  # the reply's last characters, enough to see a marker arrive
        self._opening = not fmt.starts_open and force_open
        self._force_answer = force_open  # after the thinking, open the answer at once
        self._awaiting_answer = False
        # Whether it may ever write markers in (else it only counts).
        self.forces = budget >= 0 or force_open

    @property
    def spent(self) -> int:
        """Tokens the reply spent on thinking, its markers included."""
        return self.tokens + self.opened_here

    def wants(self) -> str | None:
        """Text the engine must write next instead of sampling, or None."""
        if self._opening:
            return self.fmt.open
        if self.thinking and 0 <= self.budget <= self.tokens:
            return self.fmt.closing_text()
        if self._awaiting_answer and self._force_answer:
            return self.fmt.between + self.fmt.answer
        return None

    def push(self, text: str) -> None:
        """One generated token's text."""
        if self.answering:
            return
        if self.thinking:
            self.tokens += 1
        self._tail = (self._tail + text)[-(len(self.fmt.close) + len(self.fmt.between) + len(self.fmt.answer)
                                           + len(text) + 8):]
        if not self.thinking and not self._awaiting_answer:
            if self.fmt.open in self._tail:
                self.thinking, self._opening, self.opened_here = True, False, True
                self._tail = self._tail[self._tail.index(self.fmt.open) + len(self.fmt.open):]
            elif self._tail.strip() and not self._opening and not self.fmt.open.startswith(self._tail.lstrip()):
                self.answering = True  # the reply went straight to its answer
            return
        if self.thinking and self.fmt.close in self._tail:
            self.thinking = False
            self._tail = self._tail[self._tail.index(self.fmt.close) + len(self.fmt.close):]
            self._awaiting_answer = bool(self.fmt.answer)
            self.answering = not self._awaiting_answer
        if self._awaiting_answer and self.fmt.answer in self._tail:
            self._awaiting_answer, self.answering = False, True
