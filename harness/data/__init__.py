"""Training data: image pairs, degradations, shards and the batch loader."""
