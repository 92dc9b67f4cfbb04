"""One guard around every UI event, applied after the app is built (so an event added
later, or by an extension, is covered too).

- **Who may call it.**  With several users, an event that changes the server for
  everyone (models, presets, extensions, an extension's settings) is the owner's
  alone: the first user of the auth list, who also keeps user_data/.  The check runs
  on the server, whatever the page shows.  Fail-safe: an event is per-user only if it
  is named in PER_USER below; any other is the owner's.
- **What it may be given.**  Text with a lone surrogate is refused before the handler
  runs (webui/text_check.py); a value a component cannot convert (NaN, "abc" for a
  number) is refused naming the field.
- **How it fails.**  Gradio shows only gr.Error messages; anything else reaches the
  browser as a bare "error".  So errors the user can act on (a full disk, a file
  nested too deeply, a name that is not listed, a chat over its limits) become
  gr.Error with their message, and anything unexpected is logged with its traceback
  and reported by kind, never with internals (docs/SECURITY.md, "Errors").  An error
  that is the user's to fix is one line in the terminal, not Gradio's traceback; a value
  Gradio's own checks refuse (a slider past its maximum) names its field.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
from collections.abc import Callable
from contextlib import contextmanager

import gradio as gr
from gradio.context import LocalContext

from webui.errors import AppError
from webui.text_check import check_text

log = logging.getLogger(__name__)

# Events that touch only the caller's own data (or only read).  Everything else is
# server-wide and the owner's alone.
PER_USER = frozenset({
    # the page's one load event (webui/ui/app.py): the user's chat, character, persona, values
    "page_load",
    # chat (webui/ui/chat_tab.py)
    "chat_count_tokens", "chat_send", "chat_submit", "chat_regenerate", "chat_continue", "chat_impersonate", "chat_stop",
    "chat_new", "chat_open", "chat_character", "chat_search", "chat_rename", "chat_delete",
    "chat_export", "chat_import", "chat_edit", "chat_edit_message", "chat_pick_message", "chat_previous_version",
    "chat_next_version", "chat_fork", "chat_remove_last", "chat_recover", "chat_thinking_switches", "chat_stopped",
    "chat_marks", "chat_avatar", "chat_model_shown",
    "chat_edit_resubmit", "chat_edit_message_resubmit", "chat_pick",
    # a user's own tool calls (the tools themselves are checked against what the owner allows)
    "chat_tool_approve", "chat_tool_deny", "chat_tools_set",
    # characters and persona (webui/ui/character_tab.py)
    "character_open", "character_save", "character_delete", "character_import",
    "character_export_json", "character_export_png", "persona_save",
    # notebook, the user's own sampling values, and reading shared things
    "notebook_generate", "notebook_count_tokens", "notebook_stop", "notebook_save",
    "notebook_stopped_save", "set_params", "load_preset",
    "params_restore", "preset_mark", "steer_vectors", "steer_add",
    "default_generate", "default_count_tokens", "default_stop",
    # the token views (webui/ui/token_view.py): the user's own reply and text
    "notebook_next_token", "notebook_next_view", "notebook_probs_show", "notebook_probs_view",
    "default_next_token", "default_next_view", "default_probs_show", "default_probs_view",
    "chat_probs_show", "chat_probs_view",
    "list_presets", "neutralize_samplers", "params_support", "model_list", "model_settings", "model_fit", "lora_list",
    "model_tab_lists",
    "session_refresh",
    # the Training tab's read-only events (webui/ui/training_tab.py); starting, stopping,
    # resuming and evaluating take the model from everyone, so they are the owner's
    "training_status", "training_lists",
    # the Steer tab's listing (webui/ui/steer_tab.py); training and the check are the owner's
    "steer_list", "steer_about",
    # the Inspect tab's reading events: its note, and views of this session's own result
    # (Run and Stop take the model from everyone: the owner's)
    "inspect_note", "inspect_click", "inspect_cell", "inspect_heads",
    # bundled extensions that keep each user's records apart
    "markdown_export", "markdown_export_list", "prompt_viewer_refresh", "prompt_viewer_open",
    # the user's own lorebooks, author's note and last prompt (webui/ui/lore_panel.py, prompt_inspector.py)
    "lorebook_import", "lorebook_open", "lorebook_attach", "lorebook_export", "lorebook_delete",
    "lorebook_save_entry", "lorebook_new_entry", "lorebook_chat_view", "lorebook_entry", "authors_note_save",
    "authors_note_view", "prompt_inspect", "prompt_inspect_open",
})


def guard_app(app: gr.Blocks, owner: str | None) -> None:
    """Wrap every event handler and input component of `app` (call once, after building)."""
    for block_fn in app.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "_webui_guarded", False):
            owner_only = owner is not None and block_fn.api_name not in PER_USER
            block_fn.fn = guarded(block_fn.fn, owner if owner_only else None, block_fn.api_name or "this action")
    for block in app.blocks.values():
        if isinstance(block, gr.components.Component):
            # On the class: Gradio rebuilds a component per browser session from its
            # constructor arguments once an event has updated it, and preprocesses with that
            # copy, which has none of this instance's attributes.
            checked_class(type(block))


def guarded(fn: Callable, owner: str | None, what: str) -> Callable:
    """`fn` with the checks above; the same kind of callable (Gradio looks at the kind
    to stream generators) and the same signature (Gradio injects gr.Request by it)."""

    def before(args: tuple, kwargs: dict) -> None:
        if owner is not None:
            request = LocalContext.request.get(None)
            if getattr(request, "username", None) != owner:
                raise gr.Error(f"only the server's owner ({owner}) can do this ({what}): it changes the "
                               "server for every user")
        with user_errors():
            check_text([a for a in (*args, *kwargs.values()) if isinstance(a, (str, list, tuple, dict))], "the text")

    if inspect.isasyncgenfunction(fn):
        async def wrapper(*args, **kwargs):
            before(args, kwargs)
            with user_errors():
                async for item in fn(*args, **kwargs):
                    yield item
    elif inspect.iscoroutinefunction(fn):
        async def wrapper(*args, **kwargs):
            before(args, kwargs)
            with user_errors():
                return await fn(*args, **kwargs)
    elif inspect.isgeneratorfunction(fn):
        def wrapper(*args, **kwargs):
            before(args, kwargs)
            with user_errors():
                yield from fn(*args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            before(args, kwargs)
            with user_errors():
                return fn(*args, **kwargs)

    functools.update_wrapper(wrapper, fn)
    wrapper._webui_guarded = True  # type: ignore[attr-defined]
    return wrapper


def checked_class(cls: type) -> None:
    """Give component class `cls` a preprocess that refuses what it cannot take naming
    the field (once per class; the label is read from the component at the time)."""
    original = cls.preprocess
    if getattr(original, "_webui_guarded", False):
        return

    def preprocess(self, value):
        label = getattr(self, "label", None) or getattr(self, "elem_id", None) or type(self).__name__
        try:
            return original(self, value)
        except gr.Error as exc:  # Gradio's own check ("Value 7 is greater than maximum value 1.0.")
            message = exc.message if str(exc.message).startswith(f"{label}:") else f"{label}: {exc.message}"
            raise quiet(gr.Error(message, duration=exc.duration, title=exc.title)) from None
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            raise quiet(gr.Error(f"{label}: not a value this field can take ({exc.__class__.__name__})")) from None

    functools.update_wrapper(preprocess, original)
    preprocess._webui_guarded = True  # type: ignore[attr-defined]
    cls.preprocess = preprocess


@contextmanager
def user_errors():
    """Turn the errors a user can act on into gr.Error; log and name anything else."""
    try:
        yield
    except gr.Error as exc:
        quiet(exc)
        raise
    except AppError as exc:  # written for the user (webui/errors.py): shown as it is
        raise quiet(gr.Error(str(exc))) from exc
    except OSError as exc:
        raise quiet(gr.Error(disk_message(exc))) from exc
    except RecursionError as exc:
        raise quiet(gr.Error("the data is nested too deeply to be read")) from exc
    except UnicodeError as exc:
        raise quiet(gr.Error("the text is not valid Unicode")) from exc
    except Exception as exc:
        log.exception("unexpected error in a UI event")  # the traceback, once
        shown = gr.Error(f"the action failed ({exc.__class__.__name__}); the server log has the details",
                         print_exception=False)
        raise shown from exc


def quiet(error: gr.Error) -> gr.Error:
    """`error` logged as one line instead of Gradio's traceback: the user sees it in the
    page; the terminal only notes it."""
    if error.print_exception:
        error.print_exception = False
        log.info("refused: %s", error.message)
    return error


def disk_message(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: nothing was changed. Free some space and try again."
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the data folder cannot be written: nothing was changed."
    return f"a file could not be read or written ({exc.strerror or exc.__class__.__name__})"
