"""Live streams: a client posts new points to a channel; every subscriber of the channel receives each
point's score and anomaly flag as an SSE event the moment it is scored (`service.LiveScorer`)."""

from __future__ import annotations

import re

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import AnomalyError, DataError
from ..store import validate_name
from .core import Runtime

CHANNEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")  # \Z: `$` would let a final newline through
MAX_CHANNELS = 64
SUBSCRIBER_BUFFER = 10_000  # events a slow subscriber may lag behind before it is dropped


class Channel:
    def __init__(self, name: str):
        self.name = name
        self.scorer = None
        self.lock = anyio.Lock()  # points of one channel are scored in arrival order
        self.subscribers: set[MemoryObjectSendStream] = set()


class LiveHub:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.channels: dict[str, Channel] = {}

    def channel(self, name: str) -> Channel:
        try:
            validate_name(name, "channel name", CHANNEL_RE, "1-64 letters, digits, '_', '-', '.'", folder=False)
        except AnomalyError as exc:
            raise DataError(str(exc)) from None
        ch = self.channels.get(name)
        if ch is None:
            if len(self.channels) >= MAX_CHANNELS:
                idle = next((n for n, c in self.channels.items() if not c.subscribers), None)
                if idle is None:
                    raise DataError(f"too many live channels (at most {MAX_CHANNELS})")
                del self.channels[idle]
            ch = self.channels[name] = Channel(name)
        return ch

    async def push(self, name: str, points: list, version: str | None = None,
                   threshold_window: int | None = None) -> dict:
        ch = self.channel(name)
        async with ch.lock:
            results = await self.runtime.score(self._score, ch, points, version, threshold_window)
        events = [{"channel": name, "version": ch.scorer.version, "threshold": ch.scorer.threshold, **r}
                  for r in results]
        for event in events:
            self._broadcast(ch, event)
        return {"status": "success", "channel": name, "version": ch.scorer.version, "span": ch.scorer.span,
                "threshold": ch.scorer.threshold, "results": results}

    def _score(self, ch: Channel, points: list, version: str | None, threshold_window: int | None) -> list[dict]:
        """Worker thread: (re)load the scorer when the wanted version or threshold window changed, then score."""
        same_window = ch.scorer is not None and ch.scorer.threshold_window == threshold_window
        if version is None and same_window:
            return ch.scorer.push(points)  # the channel keeps the version it started with
        wanted = self.runtime.toolbox.store.resolve(version) if version is not None or ch.scorer is None \
            else ch.scorer.version
        if ch.scorer is None or ch.scorer.version != wanted or not same_window:
            ch.scorer = self.runtime.toolbox.live_scorer(wanted, threshold_window)
        return ch.scorer.push(points)

    def _broadcast(self, ch: Channel, event: dict) -> None:
        for stream in list(ch.subscribers):
            try:
                stream.send_nowait(event)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                ch.subscribers.discard(stream)  # too slow or gone: drop it, never block the publisher
                stream.close()

    def subscribe(self, name: str) -> tuple[MemoryObjectSendStream, MemoryObjectReceiveStream]:
        ch = self.channel(name)
        send, receive = anyio.create_memory_object_stream[dict](SUBSCRIBER_BUFFER)
        ch.subscribers.add(send)
        return send, receive

    def unsubscribe(self, name: str, send: MemoryObjectSendStream, receive: MemoryObjectReceiveStream) -> None:
        ch = self.channels.get(name)
        if ch is not None:
            ch.subscribers.discard(send)
        send.close()
        receive.close()
