"""Stage 4, run directories: the names of their files (layout.py), the typed model card (card.py) and the Model
that loads a run (run.py)."""
