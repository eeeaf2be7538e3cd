"""Station video encode at 1280x736 (720p view + frame-id strip): keyframe policy, preset, bit
rate, viewers.

Frames: 60 frames of the synthetic surgical scene (small phantom, moving camera, 1280x720)
rendered once, each with the frame-id strip below (1280x736), kept in memory. Each
configuration encodes them forwards, backwards (rate control settles; the motion stays
continuous, no cut) and forwards again, measured, with a forced IDR at frame 30 of the
measured pass (a PLI or a new viewer). Every decoded picture
of the measured pass is scored: SSIM (scikit-image ``structural_similarity``, colour, the
1280x720 view, Wang et al. 2004 eq. 13) against its source, as min / p1 / median over the
steady pictures (all but the forced IDR and the 5 after it) and the min over that forced-IDR
window; frame sizes (max, and the max over the VBV buffer: > 1 would mean the buffer
overflowed), encode time per frame (BGR in -> packets out, colour conversion included;
p50 / p95 ms, one x264 thread: the 30 fps budget is 33.3 ms on one core), achieved bit rate,
luma PSNR and whether every strip id reads back.

Table 1, keyframe policy at superfast 6 Mb/s: the old periodic IDR every 2 s (x264 ipratio
1.4, VBV 0.2 s) against intra refresh (``refresh_s``) with IDRs only on request, and the IDR
quality knobs (``ipratio``, ``vbv_s``). Table 2: presets x bit rates at the default policy.
The defaults (``DEFAULT_*`` in :mod:`scrubin.mentor.media`) are chosen from these tables.

Peer = aiortc 1.16's own ``H264Encoder`` (x264 default preset, zerolatency,
bit rate capped at 3 Mb/s) and ``Vp8Encoder`` (libvpx realtime) on the same frames, in the
same process, interleaved frame by frame (the aiortc encoders get BGR frames and convert
with swscale, as they do in a ``MediaRelay`` set-up). With N viewers aiortc's ``MediaRelay``
path encodes N times per frame; the station encodes once: the last line gives the 10-viewer
cost of each.
"""

from __future__ import annotations

import fractions
import os
import time
from typing import Any

import av
import numpy as np

from benchmarks.common import ratio_line
from scrubin.mentor.media import (
    DEFAULT_BITRATE,
    DEFAULT_IPRATIO,
    DEFAULT_PRESET,
    DEFAULT_REFRESH_S,
    DEFAULT_VBV_S,
    StreamEncoder,
)
from scrubin.mentor.strip import read_strip, with_strip

N_FRAMES = 60
FPS = 30.0
FORCED = 30          # measured-pass index of the forced IDR (a PLI)
IDR_WINDOW = 6       # the forced IDR and the 5 pictures after it


def _frames() -> list[np.ndarray]:
    from scrubin.samples.synthetic import SyntheticScene, default_camera

    scene = SyntheticScene.from_phantom("small", default_camera(1280, 720), n_frames=N_FRAMES)
    return [with_strip(scene.render(i).image_bgr, 1_000_000 + i) for i in range(N_FRAMES)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _ours(frames: list[np.ndarray], preset: str = DEFAULT_PRESET,
          bitrate: int = DEFAULT_BITRATE, threads: int = 1, **policy: Any) -> dict[str, Any]:
    """Encode ``frames`` forwards, backwards, then forwards again (measured) with a forced IDR
    at ``FORCED`` of the measured pass; SSIM (scikit-image) of every decoded picture of that
    pass, frame sizes, encode times."""
    from skimage.metrics import structural_similarity

    enc = StreamEncoder(1280, 736, FPS, bitrate, preset, threads=threads, **policy)
    enc.min_keyframe_gap_s = 0.0
    vbv_bytes = bitrate / 8 * policy.get("vbv_s", DEFAULT_VBV_S)
    dec = av.CodecContext.create("h264", "r")
    times, sizes, psnr, ids, scores, idrs = [], [], [], 0, {}, []
    n = 2 * len(frames)
    for i, img in enumerate(frames + frames[::-1] + frames):
        if i == n + FORCED:
            enc.request_keyframe()
        t = time.perf_counter()
        pk = enc.encode(img, i * 3000)
        if i < n:
            for p in pk:
                dec.decode(p)
            continue
        times.append(time.perf_counter() - t)
        sizes.append(sum(p.size for p in pk))
        if any(p.is_keyframe for p in pk):
            idrs.append(i - n)
        for p in pk:
            for f in dec.decode(p):
                y = f.to_ndarray(format="gray")
                ids += read_strip(y) is not None
                ref = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(
                    format="gray").to_ndarray()
                psnr.append(_psnr(y[:720], ref[:720]))
                scores[i - n] = structural_similarity(
                    img[:720], f.to_ndarray(format="bgr24")[:720], channel_axis=2,
                    data_range=255)
    window = range(FORCED, FORCED + IDR_WINDOW)
    steady = np.asarray([v for k, v in scores.items() if k not in window])
    worst = min((v, k) for k, v in scores.items() if k not in window)[1]
    forced = np.asarray([v for k, v in scores.items() if k in window])
    sz = np.asarray(sizes)
    return {"times": times, "mbps": sz.sum() * 8 / (len(sz) / FPS) / 1e6, "ids": ids,
            "psnr": float(np.mean(psnr)) if psnr else float("nan"), "steady": steady,
            "forced": forced, "worst": worst, "size_max": int(sz.max()),
            "vbv_fill": sz.max() / vbv_bytes,
            "p_max": int(max(s for k, s in enumerate(sizes) if k not in idrs)), "idrs": idrs}


def _line(label: str, r: dict[str, Any], n: int) -> str:
    t, st = np.array(r["times"]) * 1e3, r["steady"]
    return (f"  {label}: SSIM steady min {st.min():.3f} (frame {r['worst']}), "
            f"p1 {np.percentile(st, 1):.3f}, median {np.median(st):.3f}; forced IDR window "
            f"min {r['forced'].min():.3f}; IDRs at {r['idrs']}; frame max "
            f"{r['size_max'] / 1e3:.0f} kB ({r['vbv_fill']:.2f} of the VBV buffer), P max "
            f"{r['p_max'] / 1e3:.0f} kB; encode p50 {np.median(t):.1f} ms, p95 "
            f"{np.percentile(t, 95):.1f} ms; achieved {r['mbps']:.2f} Mb/s; PSNR(Y) "
            f"{r['psnr']:.1f} dB; strip ids read {r['ids']}/{n}")


def _side_by_side(frames: list[np.ndarray]) -> dict[str, list[float]]:
    """Ours (defaults, and the old periodic-IDR policy) and aiortc's H.264 / VP8 encoders,
    interleaved per frame, over 4 s (forwards and backwards: two of the old policy's IDRs)."""
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder

    ours = StreamEncoder(1280, 736, FPS)   # the station's defaults
    old = StreamEncoder(1280, 736, FPS, refresh_s=None, keyframe_interval_s=2.0, ipratio=1.4)
    peers = {"h264": H264Encoder(), "vp8": Vp8Encoder()}
    times: dict[str, list[float]] = {"ours": [], "old": [], "h264": [], "vp8": []}
    for i, img in enumerate(frames + frames[::-1]):
        for name, enc in (("ours", ours), ("old", old)):
            t = time.perf_counter()
            enc.encode(img, i * 3000)
            times[name].append(time.perf_counter() - t)
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
    n = len(frames)
    print(f"{n} frames 1280x736 (synthetic scene + strip), {FPS:.0f} fps nominal; measured "
          f"pass with a forced IDR at frame {FORCED}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"keyframe policy at {DEFAULT_PRESET} {DEFAULT_BITRATE / 1e6:.1f} Mb/s:")
    policies = [
        ("periodic IDR 2 s, ipratio 1.4, VBV 0.2 s (old)",
         {"refresh_s": None, "keyframe_interval_s": 2.0, "ipratio": 1.4, "vbv_s": 0.2}),
        ("intra refresh 1 s, ipratio 1.4, VBV 0.2 s",
         {"refresh_s": 1.0, "ipratio": 1.4, "vbv_s": 0.2}),
        ("intra refresh 1 s, ipratio 3.0, VBV 0.3 s",
         {"refresh_s": 1.0, "ipratio": 3.0, "vbv_s": 0.3}),
        ("intra refresh 1 s, ipratio 3.0, VBV 0.5 s",
         {"refresh_s": 1.0, "ipratio": 3.0, "vbv_s": 0.5}),
        ("intra refresh 2 s, default ipratio and VBV", {"refresh_s": 2.0}),
        (f"default: refresh {DEFAULT_REFRESH_S:g} s, ipratio {DEFAULT_IPRATIO:g}, VBV "
         f"{DEFAULT_VBV_S:g} s", {}),
    ]
    for label, policy in policies:
        print(_line(label, _ours(frames, **policy), n), flush=True)
    print("presets x bit rates at the default policy (one x264 thread):")
    for preset in ("ultrafast", "superfast", "veryfast"):
        for bitrate in (4_000_000, 6_000_000, 8_000_000):
            r = _ours(frames, preset, bitrate)
            print(_line(f"{preset:9s} {bitrate / 1e6:.1f} Mb/s", r, n), flush=True)
    t = _side_by_side(frames)
    best, h264, vp8 = t["ours"], t["h264"], t["vp8"]
    print(f"station defaults (x264 threads auto, {os.cpu_count()} CPUs): encode p50 "
          f"{np.median(best) * 1e3:.1f} ms, p95 {np.percentile(best, 95) * 1e3:.1f} ms; old "
          f"periodic-IDR policy p50 {np.median(t['old']) * 1e3:.1f} ms, p95 "
          f"{np.percentile(t['old'], 95) * 1e3:.1f} ms (interleaved; load average "
          f"{os.getloadavg()[0]:.1f})")
    print(ratio_line("encode 1280x736 (intra refresh vs the old periodic IDRs)",
                     best, t["old"], "periodic IDR"))
    print(ratio_line("encode 1280x736 (station defaults vs aiortc H264Encoder)",
                     best, h264, "aiortc H.264"))
    print(ratio_line("encode 1280x736 (station defaults vs aiortc Vp8Encoder)",
                     best, vp8, "aiortc VP8"))
    m_ours, m_h264 = float(np.median(best)) * 1e3, float(np.median(h264)) * 1e3
    print(f"10 viewers: station encodes once {m_ours:.1f} ms/frame; aiortc MediaRelay path "
          f"10 x {m_h264:.1f} = {10 * m_h264:.0f} ms/frame (frame budget at 30 fps: 33.3 ms)")


if __name__ == "__main__":
    main()
