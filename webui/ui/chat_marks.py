"""What the chat shows on each message besides its text: who wrote it (a name, and the
character's picture as the replies' avatar) and which version it is (◀ 2/3 ▶).

The server sends, whenever the chat changes, one small JSON list in a hidden box
(#chat-marks), an entry per message the Chatbot shows; webui/ui/static/chat_marks.js
puts the names and the version arrows on the messages themselves.  An arrow flips that
message's version through the chat's own "Message" number and ◀ / ▶ buttons (the same
event as before: webui/chat/actions.py's flip), so nothing here changes a conversation.

The picture comes from the user's own characters (user data is never served as files:
webui/ui/app.py's blocked_paths); a copy goes to Gradio's private cache under a folder
named by an HMAC of the user's folder, as the chat's images do (webui/ui/chat_images.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import gradio as gr

from webui.chat import actions, display
from webui.chat.history import Conversation
from webui.errors import AppError
from webui.userdata import UserSpace


def marks(conversation: Conversation, user_name: str) -> str:
    """An entry per shown message: {"name", "number", "version": [i, n]} for a message of
    the conversation, {} for a block (a reply's thinking, a tool call)."""
    view = display.shown(conversation)
    path = conversation.path()
    out: list[dict] = []
    for message, position, part in zip(view.messages, view.positions, view.parts, strict=True):
        if part != "message" or message.get("metadata") or message["role"] not in ("user", "assistant"):
            out.append({})
            continue
        index, count = conversation.alternatives(position)
        # A group chat's reply: its own speaker's name (webui/chat/group.py).
        speaker = path[position].speaker or conversation.character
        out.append({"name": user_name if message["role"] == "user" else speaker,
                    "number": position + 1, "version": [index, count]})
    return json.dumps(out, ensure_ascii=False)


class Avatars:
    """Copies of the characters' pictures in Gradio's cache, for the Chatbot's avatars."""

    def __init__(self, cache: Path | str):
        self.root = Path(cache) / "chat-avatars"
        self._secret = secrets.token_bytes(32)

    def shown(self, space: UserSpace, name: str) -> str | None:
        """A cached copy of character `name`'s picture (None: it has none)."""
        picture = space.characters.picture(name)
        if picture is None:
            return None
        data = picture.read_bytes()
        folder = self.root / hmac.new(self._secret, str(space.root).encode(), hashlib.sha256).hexdigest()[:32]
        target = folder / f"{hashlib.sha256(data).hexdigest()[:24]}.png"  # a changed picture: a new name
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
            partial.write_bytes(data)
            os.chmod(partial, 0o600)
            os.replace(partial, target)
        return str(target)



def box() -> gr.Textbox:
    """The hidden box the marks travel in (read by chat_marks.js)."""
    return gr.Textbox("[]", visible="hidden", elem_id="chat-marks")


def wire(runtime, chatbot: gr.Chatbot, chat_id: gr.State, character: gr.Dropdown, marks_box: gr.Textbox) -> None:
    """Keep the marks and the avatar up to date with the chat shown."""
    avatars = Avatars(chatbot.GRADIO_CACHE)

    def space_of(request: gr.Request) -> UserSpace:
        return runtime.users.get(getattr(request, "username", None))

    def on_chat(current, who, request: gr.Request):
        space = space_of(request)
        try:
            conversation = actions.open_chat(space, current, who)
        except (AppError, ValueError):
            return "[]"  # a name the chat refuses is reported by the chat's own events
        return marks(conversation, space.persona().name)

    def on_character(who, request: gr.Request):
        space = space_of(request)
        try:
            space.characters.load(who)  # the name checked, as everywhere
        except (AppError, ValueError):
            return gr.skip()
        return gr.Chatbot(avatar_images=(None, avatars.shown(space, who)))

    # After every change of the chat (opened, a reply started or ended, a version flipped).
    # Views the page derives for itself, private: a refused name is the chat's own events' to
    # report, and an API client has the chat's messages from those events.
    chatbot.change(on_chat, [chat_id, character], marks_box, api_name="chat_marks", show_progress="hidden",
                   trigger_mode="always_last", api_visibility="private")
    character.change(on_character, character, chatbot, api_name="chat_avatar", show_progress="hidden",
                     api_visibility="private")
