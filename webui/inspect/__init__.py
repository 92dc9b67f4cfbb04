"""Look inside a loaded model (webui/inspect/lens.py) as one job on the model (service.py)."""
