"""Our sampling steps as transformers LogitsProcessors, one small module each."""
