"""The HTTP edge: the base Flask app, auth, limits, bodies and multipart, health and liveness, OpenAPI,
metrics, logs.
"""
