"""Station video encode at 1280x736 (720p view + frame-id strip): preset, bit rate, viewers.

Frames: 60 frames of the synthetic surgical scene (small phantom, moving camera, 1280x720)
rendered once, each with the frame-id strip below (1280x736), kept in memory.

Ours = :class:`scrubin.mentor.media.StreamEncoder` (PyAV libx264, ``tune=zerolatency``, no
B-frames, Baseline, VBV-capped) for presets ultrafast / superfast / veryfast at 2.5 / 4 / 6
Mb/s with one x264 thread: SSIM (scikit-image, colour, the 1280x720 view) median / p10 / min
over a stretch that starts at a periodic IDR picture, encode time per frame (BGR in ->
packets out, colour conversion included; p50 / p95 ms), achieved bit rate at 30 fps, luma
PSNR of the decoded view (dB) and whether every strip id reads back. The defaults
(``DEFAULT_PRESET`` / ``DEFAULT_BITRATE``) are chosen from this table.

Peer = aiortc 1.16's own ``H264Encoder`` (x264 default preset, zerolatency,
bit rate capped at 3 Mb/s) and ``Vp8Encoder`` (libvpx realtime) on the same frames, in the
same process, interleaved frame by frame (the aiortc encoders get BGR frames and convert
with swscale, as they do in a ``MediaRelay`` set-up). With N viewers aiortc's ``MediaRelay``
path encodes N times per frame; the station encodes once: the last line gives the 10-viewer
cost of each.
"""

from __future__ import annotations

import fractions
import time

import av
import numpy as np

from benchmarks.common import ratio_line
from scrubin.mentor.media import DEFAULT_BITRATE, DEFAULT_PRESET, StreamEncoder
from scrubin.mentor.strip import read_strip, with_strip

N_FRAMES = 60
FPS = 30.0


def _frames() -> list[np.ndarray]:
    from scrubin.samples.synthetic import SyntheticScene, default_camera

    scene = SyntheticScene.from_phantom("small", default_camera(1280, 720), n_frames=N_FRAMES)
    return [with_strip(scene.render(i).image_bgr, 1_000_000 + i) for i in range(N_FRAMES)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _ours(frames: list[np.ndarray], preset: str, bitrate: int, threads: int = 0,
          ssim: bool = False) -> dict[str, float]:
    """Encode ``frames`` twice (the second pass is measured: rate control settled, and it
    starts with the periodic IDR at frame 60); SSIM (scikit-image) on every 2nd frame."""
    from skimage.metrics import structural_similarity

    enc = StreamEncoder(1280, 736, FPS, bitrate, preset, threads=threads)
    dec = av.CodecContext.create("h264", "r")
    times, nbytes, psnr, ids, scores = [], 0, [], 0, []
    n = len(frames)
    for i, img in enumerate(frames + frames):
        t = time.perf_counter()
        pk = enc.encode(img, i * 3000)
        if i >= n:
            times.append(time.perf_counter() - t)
        for p in pk:
            nbytes += p.size if i >= n else 0
            for f in dec.decode(p):
                if i < n:
                    continue
                y = f.to_ndarray(format="gray")
                ids += read_strip(y) is not None
                ref = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(
                    format="gray").to_ndarray()
                psnr.append(_psnr(y[:720], ref[:720]))
                if ssim and i % 2 == 0:
                    scores.append(structural_similarity(
                        img[:720], f.to_ndarray(format="bgr24")[:720], channel_axis=2,
                        data_range=255))
    return {"times": times, "mbps": nbytes * 8 / (n / FPS) / 1e6,
            "psnr": float(np.mean(psnr)) if psnr else float("nan"), "ids": ids,
            "ssim": np.asarray(scores)}


def _side_by_side(frames: list[np.ndarray]) -> dict[str, list[float]]:
    """Ours (defaults) and aiortc's H.264 / VP8 encoders, interleaved per frame."""
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder

    ours = StreamEncoder(1280, 736, FPS)   # the station's defaults
    peers = {"h264": H264Encoder(), "vp8": Vp8Encoder()}
    times: dict[str, list[float]] = {"ours": [], "h264": [], "vp8": []}
    for i, img in enumerate(frames):
        t = time.perf_counter()
        ours.encode(img, i * 3000)
        times["ours"].append(time.perf_counter() - t)
        for name, enc in peers.items():
            t = time.perf_counter()
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts, f.time_base = i * 3000, fractions.Fraction(1, 90000)
            enc.encode(f, i == 0)
            times[name].append(time.perf_counter() - t)
    return {k: v[5:] for k, v in times.items()}


def main() -> None:
    """Print the encode figures."""
    frames = _frames()
    print(f"{len(frames)} frames 1280x736 (synthetic scene + strip), {FPS:.0f} fps nominal")
    print(f"SSIM vs bit rate (one x264 thread: the 30 fps budget is 33.3 ms on one core; "
          f"default {DEFAULT_PRESET} {DEFAULT_BITRATE / 1e6:.1f} Mb/s):")
    for preset in ("ultrafast", "superfast", "veryfast"):
        for bitrate in (2_500_000, 4_000_000, 6_000_000):
            r = _ours(frames, preset, bitrate, threads=1, ssim=True)
            t = np.array(r["times"]) * 1e3
            sc = r["ssim"]
            print(f"  {preset:9s} {bitrate / 1e6:.1f} Mb/s: SSIM median {np.median(sc):.3f}, "
                  f"p10 {np.percentile(sc, 10):.3f}, min {sc.min():.3f}; encode p50 "
                  f"{np.median(t):.1f} ms, p95 {np.percentile(t, 95):.1f} ms; achieved "
                  f"{r['mbps']:.2f} Mb/s; PSNR(Y) {r['psnr']:.1f} dB; strip ids read "
                  f"{r['ids']}/{len(frames)}")
    t = _side_by_side(frames)
    best, h264, vp8 = t["ours"], t["h264"], t["vp8"]
    print(ratio_line("encode 1280x736 (station defaults vs aiortc H264Encoder)",
                     best, h264, "aiortc H.264"))
    print(ratio_line("encode 1280x736 (station defaults vs aiortc Vp8Encoder)",
                     best, vp8, "aiortc VP8"))
    m_ours, m_h264 = float(np.median(best)) * 1e3, float(np.median(h264)) * 1e3
    print(f"10 viewers: station encodes once {m_ours:.1f} ms/frame; aiortc MediaRelay path "
          f"10 x {m_h264:.1f} = {10 * m_h264:.0f} ms/frame (frame budget at 30 fps: 33.3 ms)")


if __name__ == "__main__":
    main()
