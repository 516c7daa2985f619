"""Assets: avatars, topic icons and a scene's references, checked, re-encoded and
written through the API, and served under `/a/` (routes.py, service.py, rules.py)."""

from origin.assets.routes import add_routes

__all__ = ["add_routes"]
