"""picture-worker: the Picture app's image-generation queue worker for Supabase."""

__version__ = "0.1.0"
