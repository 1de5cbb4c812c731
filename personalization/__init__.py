"""Personalization: marketers' rules, actions and the loyalty ledger (a later issue).

Kept as a package now so the dependency direction ``identity <- personalization`` is
fixed from the first commit.
"""

__all__: list[str] = []
