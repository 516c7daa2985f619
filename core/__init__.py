"""What the origin and the workers share: configuration, PostgreSQL (the pool, named
SQL, migrations) and the rows it holds (catalog, queue, outbox, exports, uploads, a
scene's life), object storage, object keys, child processes and how ffmpeg opens its
input, retry delays, logs, the LISTEN helper, CDN invalidation and the pure rules both
sides apply (playlists, export plans, conditional requests, signatures). Imports
neither `origin` nor `workers`."""
