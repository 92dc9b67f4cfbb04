"""Extensions: Text Generation WebUI-compatible hooks, isolated; see docs/EXTENSIONS.md."""

from webui.extensions.discovery import ENTRY_POINT_GROUP, Source, discover
from webui.extensions.hookspecs import hookimpl
from webui.extensions.host import ExtensionHost, Fault, load_extensions
from webui.extensions.state import make_state, params_from_state

__all__ = [
    "ENTRY_POINT_GROUP", "ExtensionHost", "Fault", "Source", "discover", "hookimpl",
    "load_extensions", "make_state", "params_from_state",
]
