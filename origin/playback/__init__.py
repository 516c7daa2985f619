"""Playback: every `/v/` route and what answers it — the stitched scene's documents
built from Postgres and kept in the read caches, a segment's own files, thumbnails at a
moment, the scene JSON, signed cookies and the player page (routes.py has the table)."""

from origin.playback.routes import add_routes

__all__ = ["add_routes"]
