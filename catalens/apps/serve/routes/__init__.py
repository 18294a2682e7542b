"""The service's routes, one module per group, each an `install(app, services)` that takes what it uses explicitly:
predictions (predict.py), product matching (match.py), the prediction history (history.py), and the card,
health, metrics and the page (status.py)."""
