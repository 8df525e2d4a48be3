"""Keeping the lake in sync with a live source after the backfill (watermarks, merges, deletes)."""
