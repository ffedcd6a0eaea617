"""Turn-taking: when the caller has finished speaking.

:mod:`voice.turntaking.smart_turn` is the audio end-of-turn model (Smart Turn v3.2).
"""
