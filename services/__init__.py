"""The five services; each runs as ``python -m services.<name>``."""
