"""The chat's "Group chat" panel: start a chat with several characters, change its cast
(add, remove, mute), its reply order, and who speaks next (webui/chat/group.py).

The panel shows the open chat's group whenever the chat changes (as the names on the
messages do: webui/ui/chat_marks.py).  A change the user makes is saved with the chat at
once, so a reload shows it and the next reply follows it.  "Speak now" has the chosen
member write the next reply through the chat's own reply event (webui/ui/chat_tab.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from webui.chat import actions, group
from webui.chat.actions import ChatView
from webui.chat.history import ChatError
from webui.errors import AppError
from webui.userdata import UserSpace

BY_ORDER = "(by the reply order)"
ORDERS = [("natural: whoever is named, else by talkativeness", "natural"), ("list: each member in turn", "list"),
          ("manual: you choose who speaks", "manual")]


@dataclass
class GroupPanel:
    members: gr.Dropdown
    muted: gr.Dropdown
    order: gr.Radio
    next_one: gr.Dropdown
    speak: gr.Button
    start: gr.Button
    note: gr.Markdown


def render() -> GroupPanel:
    with gr.Accordion("Group chat", open=False, elem_id="chat-group-panel"):
        # Dropdowns that take any name (each is checked against the user's characters):
        # their choices are filled in when a chat opens, which an API client never sees.
        members = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Members",
                              elem_id="chat-group-members",
                              info="Start: the character above and those chosen here. In a group chat: add or "
                                   "remove members.")
        start = gr.Button("Start a group chat", elem_id="chat-group-start")
        muted = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                            label="Muted (never chosen to speak)", elem_id="chat-group-muted")
        order = gr.Radio(ORDERS, value="natural", label="Reply order", elem_id="chat-group-order")
        next_one = gr.Dropdown([BY_ORDER], value=BY_ORDER, allow_custom_value=True, label="Who speaks next",
                               elem_id="chat-group-next")
        speak = gr.Button("Speak now", elem_id="chat-group-speak")
        note = gr.Markdown("", elem_id="chat-group-note")
    return GroupPanel(members, muted, order, next_one, speak, start, note)


def view(panel: GroupPanel, space: UserSpace, conversation, fresh: bool = False) -> dict:
    """The panel for `conversation`: its group, or the user's characters to start one with.
    For a chat of one character the members picked so far are left as they are (`fresh`:
    emptied, as after a group was started): this view follows every change of the chat,
    and may come after the user's next picks, which it must not undo.  The chat's own
    character may stay among them; Start counts it once."""
    cast = conversation.group
    if cast is None:
        picks = gr.update(choices=space.characters.names(), **({"value": []} if fresh else {}))
        return {panel.members: picks, panel.muted: gr.update(choices=[], value=[]),
                panel.order: "natural", panel.next_one: gr.update(choices=[BY_ORDER], value=BY_ORDER),
                panel.note: f"A chat with {conversation.character} alone."}
    names = list(dict.fromkeys([*cast.members, *space.characters.names()]))
    speaking = [m for m in cast.members if m not in cast.muted]
    return {
        panel.members: gr.update(choices=names, value=list(cast.members)),
        panel.muted: gr.update(choices=list(cast.members), value=list(cast.muted)),
        panel.order: cast.order,
        panel.next_one: gr.update(choices=[BY_ORDER, *cast.members], value=cast.next or BY_ORDER),
        panel.note: f"Group chat: {', '.join(cast.members)}; {len(speaking)} may speak.",
    }


def wire(tab, panel: GroupPanel) -> None:
    """The panel's events; `tab` is the chat's ChatTab (its space, show and outputs)."""
    chatbot, chat_id, character = tab.col.chatbot, tab.chat_id, tab.setup.character
    outputs = [panel.members, panel.muted, panel.order, panel.next_one, panel.note]

    def on_chat(current, who, request: gr.Request):
        space = tab.space(request)
        try:
            conversation = actions.open_chat(space, current, who)
        except (AppError, ValueError):
            return dict.fromkeys(outputs, gr.skip())  # the chat's own events report a refused name
        return view(panel, space, conversation)

    def on_start(who, members, order, request: gr.Request):
        space = tab.space(request)
        if isinstance(members, str):  # one name, as an API client may send it
            members = [members]
        try:
            for name in [who, *(members or [])]:
                space.characters.load(name)  # each name must be one of the user's characters
            conversation = group.start(actions.open_chat(space, None, who), members or [], order or "natural")
            space.chats.save(conversation)
            space.remember_chat(who, conversation.id)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        # The panel too: the chat it shows may look as the one before did (the same greeting).
        return {**tab.show(space, ChatView(conversation, note="Group chat started."), request),
                **view(panel, space, conversation)}

    def changed(**what):
        """The user changed one of the panel's controls: save it, and show the rest of the
        panel as it follows (never the control itself: an answer to one pick must not undo
        the next pick made meanwhile)."""
        shown = [o for o in outputs if o is not what["control"]]

        def run(current, who, value, request: gr.Request):
            space = tab.space(request)
            try:
                conversation = actions.open_chat(space, current, who)
                # Names are the user's characters', checked before anything else is done.
                if what["field"] in ("members", "muted"):
                    for name in [value] if isinstance(value, str) else value or []:
                        space.characters.load(name)
                elif what["field"] == "next_one" and value != BY_ORDER:
                    space.characters.load(value)
                if conversation.group is None:  # choices for "Start a group chat", kept in the panel
                    return dict.fromkeys(shown, gr.skip())
                group.change(conversation, **{what["field"]: value})
                space.chats.save(conversation)
            except (AppError, ValueError) as exc:
                raise gr.Error(str(exc)) from exc
            return {k: v for k, v in view(panel, space, conversation).items() if k in shown}

        return run, shown

    # The same private views as the chat's marks: a refused name is the chat's events' to report.
    chatbot.change(on_chat, [chat_id, character], outputs, api_name="chat_group_view",
                   show_progress="hidden",
                   trigger_mode="always_last", api_visibility="private")
    panel.start.click(on_start, [character, panel.members, panel.order], [*tab.view_outputs, *outputs],
                      api_name="chat_group_start")
    # .input: the user's own changes only, not the panel being shown for another chat.
    for control, field in ((panel.members, "members"), (panel.muted, "muted"), (panel.order, "order"),
                           (panel.next_one, "next_one")):
        run, shown = changed(field=field, control=control)
        control.input(run, [chat_id, character, control], shown, api_name=f"chat_group_{field.split('_')[0]}",
                      show_progress="hidden")


def wire_speak(tab, reply, inputs: list, outputs: list, queue: dict):
    """"Speak now": the member chosen under "Who speaks next" writes the next reply, by
    way of the chat's reply event (`reply`, its `inputs` and `outputs`)."""
    panel: GroupPanel = tab.cast

    def choose(current, who, chosen, request: gr.Request):
        space = tab.space(request)
        try:
            conversation = actions.open_chat(space, current, who)  # checks the character's name
            if chosen == BY_ORDER:
                raise ChatError("choose a member under 'Who speaks next' first")
            space.characters.load(chosen)  # one of the user's characters, checked before it is used
            if conversation.group is None:
                raise ChatError("this chat is not a group chat: start one first (Group chat ▸ Start a group chat)")
            if chosen not in conversation.group.members:
                raise ChatError("choose a member under 'Who speaks next' first")
            group.change(conversation, next_one=chosen)
            space.chats.save(conversation)
        except (AppError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc

    return panel.speak.click(choose, [tab.chat_id, tab.setup.character, panel.next_one], None,
                             api_name="chat_group_choose").success(reply, inputs, outputs, api_name="chat_group_speak",
                                                                   **queue)
