"""The documents feature's one object on the Runtime: each owner's store, the chosen
embedding model, and the job board indexing runs on.

Owners: a signed-in user's store lives in their own folder (webui/userdata.py), so it is
private exactly as their chats are; an API key's lives in user_data/api-documents/<the
key's label> (webui/api/usage.py: a hash prefix, never the key).  A store is reached only
through the owner the server authenticated, never through anything a request names.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from webui.documents.embedders import EmbedderUnavailable, FolderEmbedder, ModelEmbedder, \
    is_sentence_transformers_folder
from webui.documents.indexer import JobBoard
from webui.documents.store import DocumentStore
from webui.paths import is_plain_name, list_entries, pick
from webui.settings import SettingsError, read_yaml_mapping
from webui.storage import atomic_write_text

if TYPE_CHECKING:
    from webui.documents.embedders import Embedder
    from webui.runtime import Runtime
    from webui.userdata import UserSpaces

log = logging.getLogger(__name__)

LOADED_MODEL = ""  # the embedding choice meaning "the loaded language model's own"


class DocumentService:
    def __init__(self, model_dir: Path, user_data_dir: Path, users: UserSpaces):
        self.model_dir = model_dir
        self.api_root = user_data_dir / "api-documents"
        self.users = users
        self.jobs = JobBoard()
        self._choice_file = user_data_dir / "documents.yaml"
        self._stores: dict[Path, DocumentStore] = {}
        self._folder_embedders: dict[str, FolderEmbedder] = {}
        self._lock = threading.Lock()

    # -- stores ----------------------------------------------------------------------
    def for_user(self, username: str | None) -> DocumentStore:
        return self._store(self.users.get(username).root / "documents")

    def for_key(self, label: str) -> DocumentStore:
        if not is_plain_name(label):
            raise ValueError("an API key label is a plain name")
        return self._store(self.api_root / label)

    def _store(self, folder: Path) -> DocumentStore:
        with self._lock:
            if folder not in self._stores:
                self._stores[folder] = DocumentStore(folder)
            return self._stores[folder]

    # -- the embedding model ---------------------------------------------------------
    def embedding_choices(self) -> list[str]:
        """Sentence-transformers folders in models/ (by name)."""
        return [name for name, path in list_entries(self.model_dir, dirs=True).items()
                if is_sentence_transformers_folder(path)]

    def chosen(self) -> str:
        try:
            value = read_yaml_mapping(self._choice_file).get("embedding_model", LOADED_MODEL) if (
                self._choice_file.exists()) else LOADED_MODEL
        except (SettingsError, OSError):
            return LOADED_MODEL
        return value if isinstance(value, str) and value in self.embedding_choices() else LOADED_MODEL

    def choose(self, name: object) -> str:
        """Use the sentence-transformers folder `name` (checked against the listing), or
        "" for the loaded model's own embeddings."""
        if name not in (None, LOADED_MODEL):
            pick(name, {n: self.model_dir / n for n in self.embedding_choices()}, "embedding model")
        value = name or LOADED_MODEL
        atomic_write_text(self._choice_file, yaml.safe_dump({"embedding_model": value}))
        return value

    def embedder(self, runtime: Runtime, who: str) -> Embedder | None:
        """The chosen embedding model; else the loaded model's own; None when neither can
        embed (search is then BM25 alone, and says so)."""
        chosen = self.chosen()
        if chosen:
            with self._lock:
                if chosen not in self._folder_embedders:
                    self._folder_embedders = {chosen: FolderEmbedder(self.model_dir / chosen)}
                return self._folder_embedders[chosen]
        try:
            return ModelEmbedder(runtime, who)
        except EmbedderUnavailable:
            return None
