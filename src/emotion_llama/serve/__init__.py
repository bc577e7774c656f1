"""Serving: the predictor (load once, predict many), the HTTP API and the web page."""
