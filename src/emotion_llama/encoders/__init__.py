"""Frozen feature encoders and the feature store."""
