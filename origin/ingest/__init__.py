"""Ingest: users, scenes and clips coming in — the raw upload POST, tus resumable
uploads (routes.py; the protocol tus.py, uploads' bytes and leases tus_service.py, an
upload becoming a clip intake.py) and a clip's processing status."""

from origin.ingest.routes import add_routes

__all__ = ["add_routes"]
