"""Thin training loops built on the core (the core itself is usable from any loop)."""
