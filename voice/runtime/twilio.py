"""Phone calls: a Twilio Media Streams socket seen as a Realtime client.

Twilio sends ``connected``, ``start`` (with the stream's id and the call's custom parameters),
``media`` (base64 μ-law at 8 kHz, 20 ms a message), ``mark`` (a mark we sent has been played),
``dtmf`` and ``stop``; messages of another shape are ignored, the call goes on; it takes ``media`` to play, ``mark`` to be told when playback reached a
point, and ``clear`` to drop what it has not played yet. :class:`TwilioLink` translates both
ways, so the session behind it is an ordinary one in ``audio/pcmu``:

- ``start`` -> ``session.update`` (μ-law in and out, server VAD); on a server with keys the
  call must carry one as the custom parameter ``api_key`` (a Stream URL cannot send headers);
- ``media`` -> ``input_audio_buffer.append``; ``dtmf`` -> a user item "[keypad 5]" the agent
  reads in its next turn; ``stop`` -> the session ends;
- ``response.output_audio.delta`` -> ``media`` and a ``mark`` named ``<item>:<ms>`` (the
  answer's audio up to there); Twilio echoes each mark once the caller has heard it, so the
  link knows how much of the answer was really played (Twilio buffers seconds ahead);
- speech that interrupts an answer (``speech_started``) -> ``clear`` (the caller stops hearing
  it at once) and, to the session, ``conversation.item.truncate`` at the last echoed mark: the
  conversation keeps only what the caller heard, as a browser client's truncate does. The
  marks Twilio hands back for the audio it dropped are not counted as heard. (The truncate
  reaches the session with the caller's next media message, 20 ms later at most.)

Everything else the session says is not for the phone and is dropped.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from base.access import is_key
from voice.audio import base64_ms

log = logging.getLogger(__name__)

PATH = "/v1/twilio"
REFUSED = 1008  # policy violation: no or a wrong key


class TwilioLink:
    """What :class:`voice.runtime.connection.Connection` reads from and writes to."""

    def __init__(self, ws: ServerConnection, keys: set[str]) -> None:
        self.ws, self.keys = ws, keys
        self.transport = ws.transport
        self.request = ws.request
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._pending: deque[str] = deque()
        # The answer whose audio went out last: ms of it sent, ms the caller has heard, and
        # whether it was cleared (its late marks are then not "heard").
        self._playing: str | None = None
        self._sent_ms = self._heard_ms = 0.0
        self._cut = False

    async def recv(self) -> str:
        while not self._pending:
            raw = await self.ws.recv()
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if not isinstance(message, dict):  # not Twilio: said once in the log, call goes on
                log.warning("phone stream: a message that is not a JSON object was ignored")
                continue
            self._pending.extend(await self._inbound(message))
        return self._pending.popleft()

    async def _inbound(self, msg: dict[str, Any]) -> list[str]:
        kind = msg.get("event")
        if kind == "start":
            start = _object(msg.get("start"))
            self.stream_sid = start.get("streamSid") or msg.get("streamSid")
            self.call_sid = start.get("callSid")
            parameters = _object(start.get("customParameters"))
            given = str(parameters.get("api_key", ""))
            if self.keys and not is_key(given, self.keys):
                await self.ws.close(REFUSED, "a Castwork API key is needed (Parameter api_key)")
                raise ConnectionClosedOK(Close(REFUSED, "no key"), None)
            log.info("phone call %s on stream %s", self.call_sid, self.stream_sid)
            out = [_client("session.update", session=_PHONE_SESSION)]
            if language := str(parameters.get("language", "")):
                # The number's language (a Korean line), as a client's transcription.language,
                # in an update of its own: one the server does not serve is refused alone (an
                # error, logged) and the call goes on in English, its phone audio set.
                audio = {"input": {"transcription": {"language": language}}}
                out.append(_client("session.update", session={"type": "realtime", "audio": audio}))
            return out
        if kind == "media":
            media = _object(msg.get("media"))
            if media.get("track", "inbound") != "inbound" or not media.get("payload"):
                return []
            return [_client("input_audio_buffer.append", audio=str(media["payload"]))]
        if kind == "dtmf":
            digit = str(_object(msg.get("dtmf")).get("digit", ""))[:1]
            if not digit:
                return []
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": f"[keypad {digit}]"}],
            }
            return [_client("conversation.item.create", item=item)]
        if kind == "stop":
            raise ConnectionClosedOK(Close(1000, "the call ended"), None)
        if kind == "mark":
            self._on_played(str(_object(msg.get("mark")).get("name", "")))
        return []  # connected, and anything Twilio adds later

    def _on_played(self, name: str) -> None:
        item, _, ms = name.rpartition(":")
        try:
            played = float(ms)
        except ValueError:
            return  # not one of ours
        if item == self._playing and not self._cut:
            self._heard_ms = max(self._heard_ms, played)

    async def send_event(self, event: dict[str, Any]) -> None:
        for out in self._outbound(event):
            await self.ws.send(json.dumps(out))

    def _outbound(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind, sid = event.get("type"), self.stream_sid
        if sid is None:
            return []  # nothing can be played before the stream started
        if kind == "response.output_audio.delta":
            item = str(event["item_id"])
            if item != self._playing:  # a new answer: the earlier ones are history
                self._playing, self._sent_ms, self._heard_ms, self._cut = item, 0.0, 0.0, False
            self._sent_ms += base64_ms(str(event["delta"]), "audio/pcmu")
            return [
                {"event": "media", "streamSid": sid, "media": {"payload": event["delta"]}},
                {
                    "event": "mark",
                    "streamSid": sid,
                    "mark": {"name": f"{item}:{self._sent_ms:.0f}"},
                },
            ]
        if kind == "input_audio_buffer.speech_started":
            self._cut_playing()
            return [{"event": "clear", "streamSid": sid}]
        if kind == "error":
            log.warning("phone session: %s", event.get("error", {}).get("message"))
        return []

    def _cut_playing(self) -> None:
        """The caller spoke over the answer going out: tell the session how much was heard."""
        if self._playing is None or self._cut:
            return
        self._cut = True
        if self._heard_ms < self._sent_ms:
            self._pending.append(
                _client(
                    "conversation.item.truncate",
                    item_id=self._playing,
                    content_index=0,
                    audio_end_ms=round(self._heard_ms),
                )
            )

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


_PHONE_SESSION = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}},
    },
}


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a field of the wrong shape reads
    as missing, never as an error that ends the call."""
    return value if isinstance(value, dict) else {}


def _client(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})
