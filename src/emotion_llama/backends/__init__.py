"""LLM and other model backends behind small Protocols."""
