"""Typed errors of the documents path: each names what is wrong and carries its status
(webui/errors.py), so the chat shows it and the API answers it with the right code."""

from __future__ import annotations

from webui.errors import AppError


class DocumentError(AppError, ValueError):
    """A document that cannot be read; nothing of it is indexed."""

    status, code = 400, "invalid_file"


class UnsupportedDocument(DocumentError):
    status, code = 415, "unsupported_file"


class DocumentTooLarge(DocumentError):
    status, code = 413, "file_too_large"


class EncryptedDocument(DocumentError):
    code = "encrypted_file"


class MalformedDocument(DocumentError):
    code = "malformed_file"


class NoTextFound(DocumentError):
    """A readable file with no text in it (a scanned PDF: images of pages)."""

    status, code = 422, "no_text"


class IndexCancelled(AppError):
    """Indexing stopped at the user's request; nothing of the file was kept."""

    status, code = 409, "cancelled"
