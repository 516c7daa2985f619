-- LISTEN/NOTIFY (core/listen.py): the check of an idle listening connection.

-- name: listen_check
-- On a listening connection: is it alive and still listening on $1?
SELECT $1::text IN (SELECT pg_listening_channels());
