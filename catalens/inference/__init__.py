"""Stage 6, inference: predictions per image and per product (predict.py, products.py), the CDiscount submission
file, image features for search and audit (embeddings.py), the product index behind `match index` and
POST /v1/match (product_index.py), and prediction of dumps on a Ray cluster (ray_engine.py)."""
