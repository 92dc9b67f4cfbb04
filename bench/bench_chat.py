"""Per-token cost of streaming a chat reply through the real UI, with a 500-message
history vs an empty one, same model, same prompt, one run.

    .venv/bin/python bench/bench_chat.py [--model demo-kjv-4m] [--tokens 100] [--rounds 7]

Both sides send the same message, long enough to fill the context by itself, so the
model sees the same prompt (no older turn fits; the engine cuts both to the same last
tokens) and decodes the same number of tokens (greedy, end of text banned): what
differs is only the history the UI holds.  Each reply is timed
end to end through gradio_client, divided by its tokens; rounds alternate, and the
ratio is long / empty (target <= 1.1).  For scale, it also prints what re-sending the
whole history to the Chatbot on every update would cost.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import gradio as gr
from bench_api import free_port
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

    chatbot = gr.Chatbot()
    history = long_chat.turns()
    start = time.perf_counter()
    for _ in range(20):
        chatbot.postprocess(history)
    resend = (time.perf_counter() - start) / 20
    print(f"model: {runtime.models.current.describe()}")
    print(f"long chat's last reply: {note}")
    print(f"per token, empty history: {statistics.median(empties) * 1000:.2f} ms")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"per-token cost, {HISTORY}-message history / empty: {statistics.median(ratios):.3f} "
          f"(target <= 1.1; per-round quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f})")
    print(f"for scale: preparing the whole {HISTORY}-message history for the Chatbot once costs "
          f"{resend * 1000:.1f} ms, which the live reply box avoids on every update")


if __name__ == "__main__":
    main()
