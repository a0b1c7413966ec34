"""The training loop, its engine, step fitting, progress display and validation."""
