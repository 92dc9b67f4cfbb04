"""webui: a browser workbench for open-weights language models."""
