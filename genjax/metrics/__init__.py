"""Offline sample-quality metrics: FID, KID and precision/recall (placeholder)."""
