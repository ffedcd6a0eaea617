"""The composition root: the `castwork` command (``cli``), `castwork serve` (``serve``) and
`castwork doctor` (``doctor``). It wires the packages together; none of them imports it."""

__all__ = ["cli", "doctor", "serve"]
