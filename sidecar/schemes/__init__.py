"""Auth schemes: one file each, registered in registry.py."""
