"""Small helpers with no role of their own: the atomic writer, renderers, seeding."""
