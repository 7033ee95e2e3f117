"""Storage: the database engine, the tables and the Alembic migrations, shared by every part."""
