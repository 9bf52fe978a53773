"""MongoDB persistence: one module per collection."""
