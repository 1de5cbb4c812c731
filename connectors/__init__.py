"""Connectors: everything that talks to the outside world and produces Touchpoints."""

__all__: list[str] = []
