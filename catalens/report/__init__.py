"""Stage 7, reports: evaluate (metrics, speed, leakage, the report and its plots) and catalog statistics."""
