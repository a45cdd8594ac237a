"""Integrations: sqlgate's pool under other libraries (SQLAlchemy)."""
