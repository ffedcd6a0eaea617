"""Real-time voice sessions: protocol, turn state machine, engines (VAD, ASR, LLM, TTS)."""
