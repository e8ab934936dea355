"""Example entity types: the original's Counter and a small bank."""
