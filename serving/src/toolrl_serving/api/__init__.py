"""The HTTP endpoints, one module each (schemas next to their route)."""
