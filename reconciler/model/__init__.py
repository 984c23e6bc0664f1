"""The pure model: desired and observed types per resource kind, the vocabularies, actions and standings.

Nothing here does I/O or imports another part of the reconciler; every other layer builds on these types.
"""
