"""Prompt -> stream of text: decoding, stop strings, cancellation."""
