"""Decoding of video frames and audio."""
