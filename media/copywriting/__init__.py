"""AI-written ad copy: a brief of the merchant's facts, drafts from an LLM, and the rules a
draft must pass before a merchant sees it.

``brief`` (what the model is told, and each field's limits: the job's own, and a narration
that fits the template's timing), ``prompt`` (messages and the one tool whose arguments are
the draft: a local model writes it under a grammar, so it is always well-formed JSON),
``policy`` (lengths, cleaning, language, and no number or claim that is not in the facts),
``writer`` (the shell: asks the configured chat chain, keeps the drafts that pass, and falls
back to the template's own copy, saying why). All but ``writer`` are pure.
"""

__all__ = ["brief", "policy", "prompt", "writer"]
