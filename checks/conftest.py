"""The suite's service fixtures (a throwaway PostgreSQL cluster and databases of their
own on it), for the wheel check."""

from tests.conftest import fresh_db, pg_cluster

__all__ = ["fresh_db", "pg_cluster"]
