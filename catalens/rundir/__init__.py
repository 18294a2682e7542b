"""Stage 4, run directories: the typed model card (card.py), atomic files and the Model that loads a run
(run.py)."""
