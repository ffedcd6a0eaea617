"""A quality report per ad: what a person would check before sending it, checked by machine.

``measure`` (the shell: one ffmpeg pass per output for loudness, true peak, black and frozen
frames, and Tesseract reading the end card back), ``checks`` (pure: the rules that turn those
figures and the render plan into pass / warn / fail, hard or soft). A job whose report fails a
hard check is flagged in its view and its webhook, never silently sent as fine.
"""

__all__ = ["checks", "measure"]
