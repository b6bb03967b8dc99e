"""Synthetic camera and microphone (aiortc tracks) and a sink that counts what the remote side sends."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from fractions import Fraction

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

__all__ = ["FrameSink", "SyntheticCamera", "SyntheticMicrophone"]

_VIDEO_CLOCK = 90_000  # RTP video clock rate, Hz
_AUDIO_RATE = 48_000
_AUDIO_SAMPLES = 960  # 20 ms at 48 kHz: Opus's usual frame


class _Paced:
    """Hand out frame numbers at a steady rate; after a long stall start afresh instead of bursting."""

    def __init__(self, rate: float) -> None:
        self._period = 1.0 / rate
        self._start: float | None = None
        self._n = 0

    async def next(self) -> int:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._n += 1
        delay = self._start + self._n * self._period - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1.0:  # a loaded machine: resynchronise rather than send a burst of stale frames
            self._start, self._n = now, 0
        return self._n


class SyntheticCamera(MediaStreamTrack):
    """A moving test pattern; 320x240 at 20 fps by default keeps a software VP8 encoder cheap."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 20) -> None:
        super().__init__()
        self._width, self._height, self._fps = width, height, fps
        self._pace = _Paced(fps)
        bar = max(width // 8, 1)
        # One luma plane per position of a bright bar; chroma stays grey.
        self._lumas = []
        for i in range(fps):
            x0 = (i * (width - bar)) // max(fps - 1, 1)
            row = bytes(235 if x0 <= x < x0 + bar else 40 + (x * 120) // width for x in range(width))
            self._lumas.append(row * height)
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pace.next()
        frame = VideoFrame(self._width, self._height, "yuv420p")
        frame.planes[0].update(self._lumas[n % len(self._lumas)])
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts = n * (_VIDEO_CLOCK // self._fps)
        frame.time_base = Fraction(1, _VIDEO_CLOCK)
        return frame


class SyntheticMicrophone(MediaStreamTrack):
    """A quiet 400 Hz tone in 20 ms frames (400 Hz fits a whole number of periods in one frame)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pace = _Paced(_AUDIO_RATE / _AUDIO_SAMPLES)
        samples = (int(2000 * math.sin(2 * math.pi * 400 * i / _AUDIO_RATE)) for i in range(_AUDIO_SAMPLES))
        self._pcm = struct.pack(f"<{_AUDIO_SAMPLES}h", *samples)

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pace.next()
        frame = AudioFrame(format="s16", layout="mono", samples=_AUDIO_SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.sample_rate = _AUDIO_RATE
        frame.pts = n * _AUDIO_SAMPLES
        frame.time_base = Fraction(1, _AUDIO_RATE)
        return frame


class FrameSink:
    """Plays (here: counts) the remote tracks, as the device's screen and speaker would."""

    def __init__(self) -> None:
        self.video_frames = 0
        self.audio_frames = 0
        self.first_video_at: float | None = None
        self.last_size: tuple[int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def play(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track), name=f"sink-{track.kind}"))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                self.video_frames += 1
                self.last_size = (frame.width, frame.height)
                if self.first_video_at is None:
                    self.first_video_at = time.monotonic()
            else:
                self.audio_frames += 1

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
