"""Stage 2, loading: images to network inputs (preprocessing, augmentation, batches)."""
