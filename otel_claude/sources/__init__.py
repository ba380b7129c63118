"""Sources: turn what arrives from outside into normalized records (no counting here)."""
