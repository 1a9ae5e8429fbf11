"""The scoring server: an ASGI app over registered model versions."""
