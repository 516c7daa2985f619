"""Captions: a clip's WebVTT or SRT per language written, listed and deleted through
the API (routes.py; the rules core/captions.py's, the rows core/subtitles.py's)."""

from origin.captions.routes import add_routes

__all__ = ["add_routes"]
