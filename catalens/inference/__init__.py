"""Stage 6, inference: predictions per image and per product, and the CDiscount submission file."""
