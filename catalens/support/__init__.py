"""Stage 8, what the applications share (apps/ may not import each other): placing files safely with a journal
(placement.py: sort, audit --apply), image embeddings of a whole catalog (embeddings.py: audit, match), and the
product index (product_index.py: match index, serve's POST /v1/match)."""
