"""The adapter protocol and registry, and the one execution layer."""
