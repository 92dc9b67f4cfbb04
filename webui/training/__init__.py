"""LoRA / QLoRA training and perplexity evaluation (docs/TRAINING.md).

settings.py   the one schema of a run's choices
folders.py    where data, checkpoints, adapters and results live, and their listings
datasets.py   data files -> tokenized examples, checked before any work
trainer.py    one run: transformers' Trainer over a peft LoRA, checkpoints, publishing
progress.py   step, ETA, tokens/s and loss history, for the page and the terminal
perplexity.py sliding-window perplexity and the results table
service.py    what the Runtime, the Training tab and the command line call
cli.py        `python -m webui train` and `python -m webui perplexity`
"""
