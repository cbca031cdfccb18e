"""Adapters over supabase-py: the only modules of the worker that import it."""
