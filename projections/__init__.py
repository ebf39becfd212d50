"""Read models and their queries (incident reconstruction builds here)."""
