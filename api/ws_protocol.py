"""uvicorn's WebSocket server protocol with a message-size limit the app answers itself.

uvicorn closes a connection whose message exceeds `ws_max_size` on its own, with a bare 1009 and no word the
client's program could show. Here the limit is STREAM_MAX_FRAME_KB itself: the part of the message over it is
never buffered (so memory stays bounded whatever a client declares), and the app receives one event in its
place, `{"type": "websocket.receive", TOO_LARGE: <bytes received>}`, which `api.funasr_ws` answers with the same
JSON error (`frame_too_large`, in the client's language) as any message over the limit.

Built on uvicorn's wsproto implementation, whose per-message buffer is the one place to hook; pass the class
as `uvicorn.run(..., ws=FrameLimitWSProtocol)`.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.wsproto_impl import FrameTooLargeError, WSProtocol
from wsproto import events

#: The key of the event that replaces a message over the limit; its value is the bytes received so far.
TOO_LARGE = "paraformer.too_large"


class FrameLimitWSProtocol(WSProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._discarding = False  # the rest of a message over the limit is read and dropped

    def handle_message(self, event: events.TextMessage | events.BytesMessage) -> None:
        if self._discarding:
            self._discarding = not event.message_finished
            return
        try:
            self.buffer.extend(event)
        except FrameTooLargeError:
            received = self.buffer.length
            self.buffer.clear()
            self._discarding = not event.message_finished
            self.queue.put_nowait({"type": "websocket.receive", TOO_LARGE: received})  # type: ignore[arg-type]
            return
        if event.message_finished:
            self.queue.put_nowait(self.buffer.to_message())
            self.buffer.clear()
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
