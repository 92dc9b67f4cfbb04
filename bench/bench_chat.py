"""Per-token cost of streaming a chat reply through the real UI, with a 500-message
history vs an empty one, same model, same prompt, one run.

    .venv/bin/python bench/bench_chat.py [--model demo-kjv-4m] [--tokens 100] [--rounds 7]

Both sides send the same message, long enough to fill the context by itself, so the
model sees the same prompt (no older turn fits; the engine cuts both to the same last
tokens) and decodes the same number of tokens (greedy, end of text banned): what
differs is only the history the UI holds.  Each reply is timed
end to end through gradio_client, divided by its tokens; rounds alternate, and the
ratio is long / empty (target <= 1.1).

It also measures the server-side cost of one streaming update, the way Gradio
handles an event's outputs (postprocess, serialise, the file walk, the diff against
the previous update), two ways: the Chatbot itself re-sent with the reply growing as
its last message, and what the chat does (the Chatbot left alone, the hidden live
box updated; webui/ui/chat_tab.py).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import gradio as gr
from bench_api import free_port
from report import figure
from common import bench_parser
from gradio_client import Client

from webui.generation.params import make_params
from webui.runtime import build_runtime
from webui.settings import Settings
from webui.ui.app import launch
from webui.ui.parameters_tab import control_values

HISTORY = 500
MESSAGE = "Tell me again of the light and the waters and the firmament. " * 30


def main() -> None:
    args = bench_parser(__doc__, rounds=7).parse_args()
    with tempfile.TemporaryDirectory() as user_data:
        settings = Settings(model=args.model, model_dir=args.model_dir, user_data_dir=Path(user_data))
        runtime = build_runtime(settings, use_remembered=False)
        chats = runtime.users.get(None).chats
        long_chat = chats.new("Assistant", "long")
        for i in range(HISTORY):
            long_chat.append("user" if i % 2 == 0 else "assistant", f"message {i}: and the evening and the morning")
        chats.save(long_chat)

        app, url = launch(runtime, block=False, port=free_port())
        client = Client(url, verbose=False)
        params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "ban_eos_token": True})
        client.predict(*control_values(params), api_name="/set_params")

        def per_token(history: str) -> float:
            if history == "long":
                client.predict(chat=long_chat.id, api_name="/chat_open")
            else:
                client.predict(api_name="/chat_new")
            start = time.perf_counter()
            client.predict(MESSAGE, api_name="/chat_send")
            seconds = time.perf_counter() - start
            reply = chats.load(chats.list()[0].id).path()[-1]
            if f"{args.tokens} tokens" not in reply.note:  # both sides must decode the full count
                raise SystemExit(f"unequal replies: {reply.note}")
            return seconds / args.tokens

        per_token("empty"), per_token("long")  # warm-up
        ratios, empties = [], []
        for _ in range(args.rounds):
            empty = per_token("empty")
            ratios.append(per_token("long") / empty)
            empties.append(empty)
        app.close()
        note = chats.load(long_chat.id).path()[-1].note

    history = long_chat.turns()
    per_update = {(way, n): asyncio.run(update_cost(way, history[:n])) for way in ("chatbot", "live")
                  for n in (0, HISTORY)}
    print(f"model: {runtime.models.current.describe()}")
    print(f"long chat's last reply: {note}")
    print(f"per token, empty history: {statistics.median(empties) * 1000:.2f} ms")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"per-token cost, {HISTORY}-message history / empty: {statistics.median(ratios):.3f} "
          f"(target <= 1.1; per-round quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f})")
    for way, label in (("chatbot", "the Chatbot re-sent per update"), ("live", "the live box per update (ours)")):
        empty, long = per_update[(way, 0)], per_update[(way, HISTORY)]
        print(f"server-side cost of one update, {label}: empty {empty * 1000:.2f} ms, "
              f"{HISTORY} messages {long * 1000:.2f} ms")
    figure(f"per streamed token, {HISTORY}-message chat ÷ empty chat", f"{statistics.median(ratios):.3f}",
           f"median of {args.rounds} rounds, quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f}; "
           f"empty chat {statistics.median(empties) * 1000:.2f} ms per token, through the real Gradio app")
    for way, label in (("chatbot", "re-sending the Chatbot"), ("live", "the live box (ours)")):
        empty, long = per_update[(way, 0)], per_update[(way, HISTORY)]
        figure(f"server cost of one streaming update, {label}", f"{long * 1000:.2f} ms",
               f"with {HISTORY} messages; {empty * 1000:.2f} ms with none")


async def update_cost(way: str, history: list[dict], updates: int = 30) -> float:
    """Seconds per streaming update spent on the output side of a Gradio event."""
    from gradio import processing_utils, utils

    with gr.Blocks():
        block = gr.Chatbot(allow_tags=False, sanitize_html=True) if way == "chatbot" else gr.Markdown()
    previous, total = None, 0.0
    for i in range(updates):
        reply = "And the evening and the morning were the first day. " * (i + 1)
        value = [*history, {"role": "assistant", "content": reply}] if way == "chatbot" else reply
        start = time.perf_counter()
        data = block.postprocess(value)
        data = data.model_dump() if hasattr(data, "model_dump") else data
        for _ in range(2):  # Gradio walks an output for files twice (state, then the answer)
            data = await processing_utils.async_move_files_to_cache(data, block, postprocess=True)
        if previous is not None:
            utils.diff(previous, data)
        total += time.perf_counter() - start
        previous = data
    return total / updates


if __name__ == "__main__":
    main()
