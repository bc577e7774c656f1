"""Dataset and benchmark formats."""
