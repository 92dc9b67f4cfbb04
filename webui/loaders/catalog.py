"""The option schemas of the built-in loaders, importable without torch.

The command line and settings.yaml are read before any loader (or extension) is
imported, so their flags and keys come from this list.  tests/test_option_surfaces.py
checks that it matches the schemas default_registry() exposes.
"""

from __future__ import annotations

from webui.loaders.gguf_options import LlamaCppOptions
from webui.loaders.hf_options import TransformersOptions
from webui.loaders.options import LoaderOptions

BUILTIN_SCHEMAS: tuple[type[LoaderOptions], ...] = (TransformersOptions, LlamaCppOptions)
