"""Supabase Storage API subset served under ``/storage/v1`` (see :mod:`devstack.storage`)."""
