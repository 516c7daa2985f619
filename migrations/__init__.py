"""The schema: `NNNN_name.sql` files, package data, applied in order (each in a
transaction, under an advisory lock) by `storyforge migrate` (core/db.py). A change
to the schema is a new file; an applied file is never edited."""
