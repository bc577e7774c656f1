"""Training: learning-rate schedules, optimiser parameter groups and training data."""
