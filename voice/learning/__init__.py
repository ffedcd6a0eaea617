"""Learning from served turns: ``cases`` (failure capture), ``pii`` (masking personal data),
``lineage`` (which models and settings produced a turn), ``experiments`` (A/B arms)."""

__all__ = ["cases", "experiments", "lineage", "pii"]
