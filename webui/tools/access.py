"""Which tools each user may use, as the owner decides.

With one user (no --gradio-auth) that user is the owner.  With several, the owner
(the first in the auth list) may use every tool, and each other user only the tools
the owner allowed in user_data/tool_access.yaml (none until then):

    users:
      alice: [add, get_weather]
      bob: all

The check is made where a call is made (webui/tools/registry.py), whatever offered
the tool: a call named by the model or a request for a tool the user may not use is
refused there.
"""

from __future__ import annotations

import threading
from pathlib import Path

import yaml

from webui.settings import SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text

ACCESS_FILE = "tool_access.yaml"
ALL = "all"


class ToolAccess:
    def __init__(self, user_data: Path, owner: str | None, multi_user: bool):
        self.path = user_data / ACCESS_FILE
        self.owner = owner
        self.multi_user = multi_user
        self._lock = threading.Lock()
        self.problem: str | None = None

    def is_owner(self, user: str | None) -> bool:
        return not self.multi_user or (user is not None and user == self.owner)

    def _table(self) -> dict[str, object]:
        if not self.path.is_file():
            return {}
        try:
            users = read_yaml_mapping(self.path).get("users") or {}
        except SettingsError as exc:
            self.problem = str(exc)
            return {}
        return users if isinstance(users, dict) else {}

    def allowed(self, user: str | None, names: set[str]) -> set[str]:
        """Of `names`, those `user` may use."""
        if self.is_owner(user):
            return set(names)
        if user is None:
            return set()
        entry = self._table().get(user)
        if entry == ALL:
            return set(names)
        return set(names) & {n for n in entry if isinstance(n, str)} if isinstance(entry, list) else set()

    def set_allowed(self, user: str, names: list[str] | str) -> None:
        """The owner's choice for `user` (a list of tool names, or "all"), saved atomically."""
        with self._lock:
            table = dict(self._table())
            table[user] = names if names == ALL else sorted(set(names))
            atomic_write_text(self.path, yaml.safe_dump({"users": table}, sort_keys=True))
