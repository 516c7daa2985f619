"""Exports: a scene (or a moment of it) as one MP4 — the request, its status and the
files under `/e/` (routes.py; the rows are core/exports.py, the plan core/exportplan.py,
the work workers/jobs/export.py)."""

from origin.exports.routes import add_routes

__all__ = ["add_routes"]
