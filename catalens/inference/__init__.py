"""Stage 6, inference: predictions per image and per product (predict.py, products.py), the CDiscount submission
file, and prediction of dumps on a Ray cluster (ray_engine.py)."""
