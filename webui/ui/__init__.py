"""Gradio UI: one module per tab, wiring only; all logic lives in the Runtime."""
