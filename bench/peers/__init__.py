"""Servers of the peers in bench/serving.py, each written as that peer's users write one, and the
no-op stack. Each loads ``MODEL_PICKLE``: a pickled ``(model, columns)``, columns None for a
model fitted on an array."""
