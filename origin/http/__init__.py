"""The HTTP layer between aiohttp and the handlers: request ids and JSON errors
(middleware.py), the fields every answer carries and CORS (fields.py), bearer tokens
and the signing guard (auth.py), and the access log with request metrics (access.py).
Handlers import from here; nothing here imports a handler."""
