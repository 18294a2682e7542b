"""Stage 7, reports: evaluate (metrics, plots, speed, leakage) and catalog statistics."""
