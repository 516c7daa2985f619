"""A scene's life over HTTP: deleting a scene, removing and retrying a clip (routes.py;
the rules are core/lifecycle.py, shared with the operator CLI and the workers)."""

from origin.lifecycle.routes import add_routes

__all__ = ["add_routes"]
