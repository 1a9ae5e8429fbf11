"""Monitoring: collection inside the scoring server, reading it back, drift and charts."""
