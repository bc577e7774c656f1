"""Evaluation metrics for emotion recognition and reasoning."""
