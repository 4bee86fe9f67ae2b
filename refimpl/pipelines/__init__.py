"""Per-paper pipelines: from data to trained models and their evaluation."""
