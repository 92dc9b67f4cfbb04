"""Loader backends: each turns a model folder into a LoadedModel."""
