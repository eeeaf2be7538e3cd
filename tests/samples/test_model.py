"""Analytic model: exact signed distances, HU painting, input rejections."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.errors import ImagingError
from scrubin.samples import anatomy
from scrubin.samples.model import HeadPhantom, SampleError, phantom_model, primitive_sdf


@pytest.fixture(scope="module")
def model() -> HeadPhantom:
    return anatomy.default_model()


def _ellipsoid_surface(semi: np.ndarray, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Surface points and unit outward normals of a centred ellipsoid, incl. axis planes."""
    th, ph = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, n, endpoint=False))
    u = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    u = np.unique(np.round(u, 12), axis=0)  # includes exact zeros (planes and axes)
    pts = u * semi
    nrm = pts / semi**2
    return pts, nrm / np.linalg.norm(nrm, axis=1, keepdims=True)


@pytest.mark.parametrize("semi", [(75.0, 95.0, 100.0), (62.0, 82.0, 87.0), (13.0, 16.0, 14.0)])
def test_ellipsoid_distance_along_normals(semi: tuple[float, float, float]) -> None:
    # Blaschke's rolling theorem: a ball of radius < min curvature radius (b^2/a) rolls freely
    # inside, so surface point + delta * normal is exactly |delta| away for such delta.
    a = np.asarray(semi)
    rmin = np.min(a) ** 2 / np.max(a)
    s, n = _ellipsoid_surface(a)
    centre = np.array([3.0, -7.0, 11.0])
    prim = {"type": "ellipsoid", "center": centre.tolist(), "semi_axes": list(semi)}
    for delta in (-0.9 * rmin, -2.0, -0.01, 0.0, 0.02, 1.5, 40.0):
        d = primitive_sdf(prim, centre + s + delta * n)
        np.testing.assert_allclose(d, delta, atol=1e-9)


def test_ellipsoid_distance_matches_dense_sampling() -> None:
    semi = np.array([75.0, 95.0, 100.0])
    prim = {"type": "ellipsoid", "center": [0.0, 0.0, 0.0], "semi_axes": semi.tolist()}
    surf, _ = _ellipsoid_surface(semi, n=700)
    rng = np.random.default_rng(1)
    pts = rng.uniform(-130, 130, (25, 3))
    pts[:9] = [  # on / near axes and symmetry planes, inside and outside
        [0.0, 0.0, 0.0], [0.0, 10.0, 5.0], [5.0, 0.0, 0.0], [0.0, 1e-9, 5.0],
        [1e-7, 0.0, 1e-13], [30.0, 1e-13, 2.0], [0.0, 0.0, 140.0], [90.0, 1e-6, 0.0],
        [1e-200, 3.0, 1e-300],
    ]
    d = primitive_sdf(prim, pts)
    brute = np.array([np.min(np.linalg.norm(surf - p, axis=1)) for p in pts])
    np.testing.assert_allclose(np.abs(d), brute, atol=0.05)  # sampling step ~0.4 mm
    assert np.all(np.abs(d) <= brute + 1e-9)  # exact distance never exceeds a sample's
    inside = np.sum((pts / semi) ** 2, axis=1) < 1
    assert np.array_equal(d < 0, inside)


def test_other_primitives_known_points() -> None:
    box = {"type": "box", "min": [0.0, 0.0, 0.0], "max": [2.0, 4.0, 6.0]}
    np.testing.assert_allclose(
        primitive_sdf(box, np.array([[1.0, 1.0, 3.0], [5.0, 2.0, 3.0], [5.0, 8.0, 3.0]])),
        [-1.0, 3.0, 5.0],
    )
    cap = {"type": "capsule", "p0": [0.0, 0.0, 0.0], "p1": [0.0, 0.0, 10.0], "radius": 2.0}
    np.testing.assert_allclose(
        primitive_sdf(cap, np.array([[0.0, 0.0, 5.0], [3.0, 4.0, 5.0], [0.0, 0.0, -5.0]])),
        [-2.0, 3.0, 3.0],
    )
    half = {"type": "halfspace", "normal": [0.0, 0.0, -1.0], "offset": 35.0}
    np.testing.assert_allclose(primitive_sdf(half, np.array([[0.0, 0.0, -40.0]])), [5.0])
    with pytest.raises(SampleError, match="unknown primitive"):
        primitive_sdf({"type": "torus"}, np.zeros((1, 3)))


def test_structure_distances_at_known_points(model: HeadPhantom) -> None:
    sd = model.signed_distance
    assert sd("skull", np.array([[0.0, 0.0, 97.0]]))[0] == pytest.approx(3.0, abs=1e-9)
    assert sd("skull", np.array([[0.0, 0.0, -40.0]]))[0] == pytest.approx(5.0, abs=1e-9)
    assert sd("brain", np.array([[0.0, 0.0, 0.0]]))[0] == pytest.approx(-28.0, abs=1e-9)
    assert sd("brain", np.array([[65.0, 0.0, 0.0]]))[0] == pytest.approx(3.0, abs=1e-9)
    assert sd("table", np.array([[0.0, 115.0, 0.0]]))[0] == pytest.approx(-7.0, abs=1e-9)
    assert sd("skin", np.array([[0.0, 0.0, 110.0]]))[0] == pytest.approx(10.0, abs=1e-9)
    fid = np.array([f["center_lps"] for f in anatomy.fiducials()])
    np.testing.assert_allclose(sd("skin", fid), anatomy.FIDUCIAL_OFFSET_MM, atol=1e-5)
    np.testing.assert_allclose(sd("fiducials", fid), -anatomy.FIDUCIAL_DIAMETER_MM / 2, atol=1e-9)
    target = np.array([anatomy.TARGET_LPS])
    assert sd("brain", target)[0] < -10.0


def test_vessel_tube_distance(model: HeadPhantom) -> None:
    parts = model.structures["vessel"]["parts"]
    a = np.array(parts[10][0]["p0"])
    b = np.array(parts[10][0]["p1"])
    mid = 0.5 * (a + b)
    perp = np.cross(b - a, [0.0, 0.0, 1.0])
    perp /= np.linalg.norm(perp)
    d = model.signed_distance("vessel", np.array([mid, mid + 5.0 * perp, mid + 1.5 * perp]))
    np.testing.assert_allclose(d, [-2.0, 3.0, -0.5], atol=1e-6)


def test_hu_painting(model: HeadPhantom) -> None:
    pts = np.array(
        [[0.0, 0.0, 0.0], [65.5, 0.0, 0.0], [0.0, -99.0, 60.0], [0.0, 115.0, 0.0],
         anatomy.fiducials()[0]["center_lps"], [22.0, -44.0, -55.0], [0.0, 30.0, -52.5]]
    )
    hu = model.hu_at(pts)
    np.testing.assert_array_equal(hu, [35.0, 1200.0, -1000.0, 200.0, 3000.0, -1000.0, 700.0])


def test_half_max_and_metadata(model: HeadPhantom) -> None:
    assert model.half_max("skin") == pytest.approx(-480.0)
    assert model.half_max("skull") == pytest.approx(620.0)
    assert model.hu_inside("vessel") == 300.0 and model.hu_outside("vessel") == 35.0
    for name, s in anatomy.structures().items():
        assert s["half_max_hu"] == pytest.approx(model.half_max(name))
    assert model.structure_names[0] == "table" and model.structure_names[-1] == "fiducials"


def test_rejections(model: HeadPhantom) -> None:
    with pytest.raises(SampleError, match="unknown structure"):
        model.signed_distance("liver", np.zeros((1, 3)))
    with pytest.raises(SampleError, match=r"\(N, 3\)"):
        model.signed_distance("skin", np.zeros(3))
    with pytest.raises(SampleError, match=r"\(N, 3\)"):
        model.hu_at(np.zeros((4, 2)))
    with pytest.raises(SampleError, match="NaN"):
        model.signed_distance("skin", np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(SampleError, match="structures"):
        phantom_model({"frame": "LPS"})
    with pytest.raises(SampleError, match="no structures"):
        HeadPhantom({})
    assert issubclass(SampleError, ImagingError)


def test_part_bbox_clips_with_axis_aligned_halfspaces() -> None:
    from scrubin.samples.model import part_bbox

    ell = {"type": "ellipsoid", "center": [0.0, 0.0, 0.0], "semi_axes": [1.0, 2.0, 3.0]}
    cut = {"type": "halfspace", "normal": [0.0, 0.0, -1.0], "offset": 1.0}  # z >= -1
    np.testing.assert_allclose(part_bbox([ell, cut]), [[-1, -2, -1], [1, 2, 3]])
    with pytest.raises(SampleError, match="bounded"):
        part_bbox([cut])


def test_malformed_primitives_rejected() -> None:
    from scrubin.samples.model import encode_primitive

    with pytest.raises(SampleError, match="unknown primitive type"):
        encode_primitive({"center": [0, 0, 0]})
    with pytest.raises(SampleError, match="malformed capsule"):
        encode_primitive({"type": "capsule", "p0": [0, 0, 0], "radius": 1.0})
    with pytest.raises(SampleError, match="malformed box"):
        encode_primitive({"type": "box", "min": [0, 0], "max": [1, 1, 1]})
    with pytest.raises(SampleError, match="positive"):
        encode_primitive({"type": "ellipsoid", "center": [0, 0, 0], "semi_axes": [1, 0, 2]})
    code, par = encode_primitive({"type": "ellipsoid", "center": [1, 2, 3],
                                  "semi_axes": [5.0, 9.0, 7.0]})
    assert code == 0 and list(par[6:8]) == [1.0, 2.0]  # largest (y), then middle (z)
