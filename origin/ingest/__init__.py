"""Ingest: users, scenes and clips coming in — the raw upload POST, tus resumable
uploads, and a clip's processing status (routes.py, tus_routes.py)."""

from aiohttp import web

from origin.ingest import routes, tus_routes


def add_routes(app: web.Application) -> None:
    routes.add_routes(app)
    tus_routes.add_routes(app)
