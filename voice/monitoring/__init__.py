"""What developers watch: ``turnstats`` and ``turnlog_reader`` (P50/P95 from turn logs),
``evaluate`` and ``evalset`` (`castwork eval`), ``loadtest`` (concurrent sessions),
``textnorm`` (text normalised for WER)."""

__all__ = ["evalset", "evaluate", "loadtest", "textnorm", "turnlog_reader", "turnstats"]
