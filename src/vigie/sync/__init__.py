"""Sync: extract → mask → scan → load, with checkpoints, lineage and progress."""
