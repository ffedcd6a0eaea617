"""A merchant's brand kit, applied to any template: colours, a logo, a font and a music track.

* :mod:`.colours`: primary and accent over the template's, readable by WCAG contrast (pure).
* :mod:`.font`: an uploaded TTF/OTF, checked with fontTools; used for every text layer of a
  job whose text it covers, else the house font (and the job says why).
* :mod:`.track`: an uploaded music track, checked with ffprobe, decoded, loudness-normalised
  to the level of the house music, then ducked under the narration like it.

The kit is kept per merchant by the API (:mod:`workers.api.brand`); a job carries copies of
the files it uses, so changing the kit never changes a job already submitted.
"""
