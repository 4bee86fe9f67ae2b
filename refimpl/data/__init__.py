"""Data helpers: synthetic data, batching and the category histories the models read."""
