"""An audio jitter buffer for aiortc receivers that loses one frame per lost packet, not five.

aiortc (1.16) gives every audio ``RTCRtpReceiver`` a ``JitterBuffer(capacity=16,
prefetch=4)``: it hands out a frame once ``prefetch`` later frames are queued behind it, and
stops at the first missing sequence number. A lost packet therefore stalls it until 16
packets have queued (``smart_remove``); from then on one frame comes out per packet in and the
buffer stays full, so the next lost packet or a packet reordered past the full window makes
``smart_remove`` discard queued *received* packets (aiortc issue #543: "the audio jitter
buffer will always be full"). Fed this project's impairment relay pattern offline (5 % loss,
80 +- 20 ms; tests/mentor/test_audio_jitter.py), 172 of 3000 packets lost (5.7 %) become 885
missing 20 ms frames (29.5 %), in runs of about five (100 ms holes); with this buffer 176
(the lost ones and the last four, still waiting); in the live test
(tests/mentor/test_faults_voice.py) the station lost 21-31 % of the mentor's voice frames.

:class:`GapSkippingJitterBuffer` keeps aiortc's class and its prefetch, and adds the rule of
a playout buffer (RFC 3550 section 6.4.1 leaves loss handling to the receiver; NetEq and
pjmedia do the same): a missing packet at the head is declared lost once ``prefetch + 1``
later packets are waiting, and skipped, so the buffer stays ``prefetch`` frames deep and
only the lost packet's own frame is missing. A packet arriving after it was declared lost is
dropped as late (aiortc's "misorder" rule, unchanged).

:func:`use_gap_skipping_buffer` installs it on an audio receiver (aiortc keeps the buffer in
a private attribute; the function checks that it is there and of aiortc's type, and raises
otherwise, so an aiortc upgrade that moves it fails loudly).
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from scrubin.mentor.errors import MentorError

_ATTR = "_RTCRtpReceiver__jitter_buffer"


class GapSkippingJitterBuffer(JitterBuffer):
    """aiortc's audio jitter buffer with late packets declared lost (module docstring).

    One RTP packet is one frame (Opus, RFC 7587 section 4.2). ``late``: packets dropped
    for arriving after their turn; ``skipped``: sequence numbers declared lost.
    """

    def __init__(self, capacity: int = 16, prefetch: int = 4) -> None:
        super().__init__(capacity=capacity, prefetch=prefetch, is_video=False)
        self.skipped = 0
        self.late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Store ``packet``; the next frame to decode, if one is due (module docstring)."""
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        delta = uint16_add(seq, -self._origin)
        misorder = uint16_add(self._origin, -seq)
        if misorder < delta:                     # behind the head
            if misorder < MAX_MISORDER:
                self.late += 1                   # its turn has passed
                return False, None
            self.remove(self._capacity)          # a jump back: the stream restarted
            self._origin, delta = seq, 0
        if delta >= self._capacity:              # far ahead: drop the oldest to fit it
            n = delta - self._capacity + 1       # may exceed the buffer (a long outage)
            self.skipped += n
            self.remove(min(n, self._capacity))  # aiortc's remove() takes <= capacity
            self._origin = uint16_add(seq, 1 - self._capacity)
        self._packets[seq % self._capacity] = packet
        if sum(p is not None for p in self._packets) < self._prefetch + 1:
            return False, None
        while self._packets[self._origin % self._capacity] is None:
            self._origin = uint16_add(self._origin, 1)      # declared lost
            self.skipped += 1
        head = self._packets[self._origin % self._capacity]
        self.remove(1)
        return False, JitterFrame(data=head._data, timestamp=head.timestamp)  # type: ignore


def use_gap_skipping_buffer(receiver: Any) -> GapSkippingJitterBuffer:
    """Give an aiortc audio ``RTCRtpReceiver`` a :class:`GapSkippingJitterBuffer` (before or
    while packets arrive: what the old buffer held is dropped). Raises MentorError when the
    receiver does not hold an aiortc audio jitter buffer where aiortc 1.14-1.16 keeps it."""
    old = getattr(receiver, _ATTR, None)
    if not isinstance(old, JitterBuffer) or getattr(old, "_is_video", True):
        raise MentorError(f"receiver {receiver!r}: expected an aiortc audio receiver with its "
                          f"jitter buffer in {_ATTR} (aiortc 1.14-1.16)")
    if isinstance(old, GapSkippingJitterBuffer):
        return old
    new = GapSkippingJitterBuffer(old.capacity, old._prefetch)
    setattr(receiver, _ATTR, new)
    return new
