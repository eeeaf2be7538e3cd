"""Hand-eye calibration ``A X = X B``: a camera rigidly mounted on a tracked body.

Set-up: a tracker reports ``T_TRACKER_TOOL_i`` of the body the camera is fixed to, and the
camera sees a static target, ``T_CAMERA_TARGET_i`` (e.g. a ChArUco board), at the same
instants i. The unknown is ``X = T_TOOL_CAMERA``. Since ``T_TRACKER_TARGET`` is constant,
``T_TRACKER_TOOL_i X T_CAMERA_TARGET_i = T_TRACKER_TOOL_j X T_CAMERA_TARGET_j``, hence for
each pair (i, j)::

    A = T_TRACKER_TOOL_i^-1 T_TRACKER_TOOL_j,   B = T_CAMERA_TARGET_i T_CAMERA_TARGET_j^-1,
    A X = X B.

This is OpenCV's ``calibrateHandEye`` convention (gripper2base = ``T_TRACKER_TOOL``,
target2cam = ``T_CAMERA_TARGET``, result cam2gripper = ``T_TOOL_CAMERA``). Three methods are
implemented here (pure numpy, with the pair selection and residuals below) and cross-checked
against ``cv2.calibrateHandEye`` of OpenCV 5.1 in tests/registration/test_handeye.py:
rotations agree exactly; OpenCV's Park and Tsai solve the translation equation on the
inverse motions ``A_ij^-1, B_ij^-1``, an equally valid but differently weighted least
squares, so with noise their translations differ from ours by a fraction of the noise-level
error. Two more methods are taken from OpenCV as they are:

``"tsai"``   Tsai & Lenz, "A new technique for fully autonomous and efficient 3D robotics
             hand/eye calibration", IEEE Trans. Robotics and Automation 5(3), 1989: rotation
             from modified Rodrigues vectors, ``skew(P_A + P_B) P'_X = P_B - P_A`` (eq. 12).
``"park"``   Park & Martin, "Robot sensor calibration: solving AX = XB on the Euclidean
             group", IEEE Trans. Robotics and Automation 10(5), 1994: ``R_X = (M^T M)^-1/2 M^T``
             with ``M = sum beta_k alpha_k^T`` of the rotation logarithms (eq. 15).
``"daniilidis"`` Daniilidis, "Hand-eye calibration using dual quaternions", Int. J. Robotics
             Research 18(3), 1999: rotation and translation at once from the null space of the
             stacked dual-quaternion equations (eq. 31), with the unit / orthogonality
             constraints solved as in §5.
``"horaud"``  Horaud & Dornaika, "Hand-eye calibration", Int. J. Robotics Research 14(3),
             1995 (``cv2.CALIB_HAND_EYE_HORAUD``).
``"andreff"`` Andreff, Horaud & Espiau, "On-line hand-eye calibration", 3-D Digital Imaging
             and Modeling, 1999 (``cv2.CALIB_HAND_EYE_ANDREFF``).
Park and Tsai take the translation from ``(R_A - I) t_X = R_X t_B - t_A`` by least squares
(Tsai eq. 15).
All pairs (i < j) whose rotation exceeds ``min_rotation_deg`` are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CAMERA, TOOL, Transform

#: Methods implemented here.
OWN_METHODS = ("park", "tsai", "daniilidis")
#: Methods delegated to ``cv2.calibrateHandEye`` (name -> ``cv2`` flag attribute).
OPENCV_METHODS = {"horaud": "CALIB_HAND_EYE_HORAUD", "andreff": "CALIB_HAND_EYE_ANDREFF"}
METHODS = (*OWN_METHODS, *OPENCV_METHODS)


class HandEyeError(RegistrationError):
    """Hand-eye input is unusable (too few poses, degenerate motions, bad matrices)."""


@dataclass(frozen=True)
class HandEyeResult:
    """``X = T_TOOL_CAMERA`` and the consistency of ``T_TRACKER_TARGET`` over the views.

    ``residual_mm`` / ``residual_deg``: RMS spread of the per-view ``T_TRACKER_TARGET`` (its
    origin in mm, its rotation in degrees) around their mean — a self-consistency measure
    of the data, not an accuracy.
    """

    transform: Transform
    target_in_tracker: Transform
    residual_mm: float
    residual_deg: float
    n_pairs: int
    method: str


def _as_matrices(poses: object, what: str) -> np.ndarray:
    if isinstance(poses, (list, tuple)) and poses and isinstance(poses[0], Transform):
        m = np.stack([p.matrix for p in poses])
    else:
        m = np.asarray(poses, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (4, 4):
        raise HandEyeError(f"{what} must be (N, 4, 4) poses, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise HandEyeError(f"{what} contain NaN or infinite values")
    r = m[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", r, r) - np.eye(3)).max(axis=(1, 2))
    if np.any(err > 1e-4) or np.any(np.linalg.det(r) <= 0):
        bad = int(np.argmax(err))
        raise HandEyeError(f"{what}: pose {bad} has no valid rotation (orthonormal, det +1)")
    return m


def _inv(m: np.ndarray) -> np.ndarray:
    out = np.zeros_like(m)
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, m[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def _skew(v: np.ndarray) -> np.ndarray:
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])


def _motion_pairs(
    tracker_poses: np.ndarray, camera_poses: np.ndarray, min_rotation_deg: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Relative motions ``A`` (tool) and ``B`` (camera), (K, 4, 4) each, over pairs i < j."""
    a_list, b_list = [], []
    inv_t = _inv(tracker_poses)
    inv_c = _inv(camera_poses)
    n = tracker_poses.shape[0]
    for i in range(n):
        a = inv_t[i] @ tracker_poses[i + 1:]
        b = camera_poses[i] @ inv_c[i + 1:]
        ang_a = np.degrees(Rotation.from_matrix(a[:, :3, :3]).magnitude())
        ang_b = np.degrees(Rotation.from_matrix(b[:, :3, :3]).magnitude())
        keep = (ang_a >= min_rotation_deg) & (ang_b >= min_rotation_deg)
        a_list.append(a[keep])
        b_list.append(b[keep])
    return np.concatenate(a_list), np.concatenate(b_list)


def _rotation_park(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    alpha = Rotation.from_matrix(a[:, :3, :3]).as_rotvec()
    beta = Rotation.from_matrix(b[:, :3, :3]).as_rotvec()
    m = beta.T @ alpha  # sum_k beta_k alpha_k^T (Park & Martin eq. 15)
    w, v = np.linalg.eigh(m.T @ m)
    if w.min() <= 1e-12 * max(w.max(), 1e-300):
        raise HandEyeError("motions rotate about parallel axes; need two non-parallel axes")
    inv_sqrt = v @ np.diag(w ** -0.5) @ v.T
    r = inv_sqrt @ m.T
    u, _, vt = np.linalg.svd(r)
    return u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt


def _rotation_tsai(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def modified_rodrigues(rot: np.ndarray) -> np.ndarray:
        rv = Rotation.from_matrix(rot).as_rotvec()
        ang = np.linalg.norm(rv, axis=1, keepdims=True)
        axis = rv / np.maximum(ang, 1e-300)
        return 2.0 * np.sin(ang / 2.0) * axis

    pa = modified_rodrigues(a[:, :3, :3])
    pb = modified_rodrigues(b[:, :3, :3])
    lhs = np.concatenate([_skew(x + y) for x, y in zip(pa, pb, strict=True)])
    rhs = (pb - pa).reshape(-1)
    sol, _, rank, _ = np.linalg.lstsq(lhs, rhs, rcond=None)
    if rank < 3:
        raise HandEyeError("motions rotate about parallel axes; need two non-parallel axes")
    p = 2.0 * sol / np.sqrt(1.0 + sol @ sol)  # Tsai & Lenz eq. 13
    n2 = p @ p
    r = (1 - n2 / 2) * np.eye(3) + 0.5 * (np.outer(p, p) + np.sqrt(4 - n2) * _skew(p))
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def _quat_wxyz(r: np.ndarray) -> np.ndarray:
    q = Rotation.from_matrix(r).as_quat()  # (..., x y z w)
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def _qmul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions (w, x, y, z)."""
    w = p[..., 0] * q[..., 0] - np.sum(p[..., 1:] * q[..., 1:], axis=-1)
    v = (p[..., :1] * q[..., 1:] + q[..., :1] * p[..., 1:]
         + np.cross(p[..., 1:], q[..., 1:]))
    return np.concatenate([w[..., None], v], axis=-1)


def _dual_quaternions(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) real and dual parts of (K, 4, 4) rigid transforms: q, q' = 1/2 t q."""
    q = _quat_wxyz(m[:, :3, :3])
    t = np.concatenate([np.zeros((m.shape[0], 1)), m[:, :3, 3]], axis=1)
    return q, 0.5 * _qmul(t, q)


def _daniilidis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    qa, qa_d = _dual_quaternions(a)
    qb, qb_d = _dual_quaternions(b)
    flip = np.sum(qa * qb, axis=1) < 0  # same hemisphere (q and -q are one rotation)
    qb[flip] *= -1
    qb_d[flip] *= -1
    rows = []
    for k in range(a.shape[0]):  # Daniilidis eq. 31: S_k [q; q'] = 0
        av, bv, adv, bdv = qa[k, 1:], qb[k, 1:], qa_d[k, 1:], qb_d[k, 1:]
        top = np.zeros((3, 8))
        top[:, 0] = av - bv
        top[:, 1:4] = _skew(av + bv)
        bottom = np.zeros((3, 8))
        bottom[:, 0] = adv - bdv
        bottom[:, 1:4] = _skew(adv + bdv)
        bottom[:, 4] = av - bv
        bottom[:, 5:8] = _skew(av + bv)
        rows += [top, bottom]
    _, sv, vt = np.linalg.svd(np.concatenate(rows))
    if sv.size < 8 or sv[5] < 1e-9 * sv[0]:
        raise HandEyeError("motions rotate about parallel axes; need two non-parallel axes")
    v7, v8 = vt[6], vt[7]
    u1, w1, u2, w2 = v7[:4], v7[4:], v8[:4], v8[4:]
    # q^T q' = 0: s^2 u1.w1 + s (u1.w2 + u2.w1) + u2.w2 = 0, s = lambda1 / lambda2 (eq. 35)
    coeffs = [u1 @ w1, u1 @ w2 + u2 @ w1, u2 @ w2]
    roots = np.roots(coeffs) if abs(coeffs[0]) > 1e-12 else np.array([-coeffs[2] / coeffs[1]])
    roots = roots[np.isreal(roots)].real
    if roots.size == 0:
        raise HandEyeError("dual-quaternion constraints have no real solution (noisy motions)")
    norms = [s * s * (u1 @ u1) + 2 * s * (u1 @ u2) + u2 @ u2 for s in roots]
    s_best = roots[int(np.argmax(norms))]
    l2 = 1.0 / np.sqrt(max(norms))
    l1 = s_best * l2
    q = l1 * u1 + l2 * u2
    q_d = l1 * w1 + l2 * w2
    conj = q * [1, -1, -1, -1]
    t = 2.0 * _qmul(q_d, conj)[1:]
    x = np.eye(4)
    x[:3, :3] = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
    x[:3, 3] = t
    return x


def _opencv(tracker_poses: np.ndarray, camera_poses: np.ndarray, method: str) -> np.ndarray:
    """``X = T_TOOL_CAMERA`` from ``cv2.calibrateHandEye`` with the flag of ``method``."""
    import cv2  # heavy: only for the OpenCV-backed methods

    r, t = cv2.calibrateHandEye(
        list(tracker_poses[:, :3, :3]), list(tracker_poses[:, :3, 3]),
        list(camera_poses[:, :3, :3]), list(camera_poses[:, :3, 3]),
        method=getattr(cv2, OPENCV_METHODS[method]),
    )
    x = np.eye(4)
    x[:3, :3] = r
    x[:3, 3] = np.ravel(t)
    err = np.abs(x[:3, :3].T @ x[:3, :3] - np.eye(3)).max() if np.all(np.isfinite(x)) else 1.0
    if err > 1e-6:
        raise HandEyeError(f"OpenCV's {method!r} hand-eye method found no valid rotation "
                           "(degenerate motions?)")
    return x


def calibrate_hand_eye(
    tracker_poses: object,
    camera_poses: object,
    method: str = "park",
    min_rotation_deg: float = 2.0,
) -> HandEyeResult:
    """Solve ``A X = X B`` for ``X = T_TOOL_CAMERA`` (mm).

    Parameters
    ----------
    tracker_poses
        ``T_TRACKER_TOOL_i``: (N, 4, 4) matrices or Transforms, mm.
    camera_poses
        ``T_CAMERA_TARGET_i`` at the same instants, mm.
    method
        ``"park"``, ``"tsai"``, ``"daniilidis"``, or OpenCV's ``"horaud"`` / ``"andreff"``
        (module docstring).
    min_rotation_deg
        Pairs whose relative rotation is smaller (for A or B) are skipped.
    """
    if method not in METHODS:
        raise HandEyeError(f"unknown hand-eye method {method!r}; expected one of {METHODS}")
    ta = _as_matrices(tracker_poses, "tracker poses")
    cb = _as_matrices(camera_poses, "camera poses")
    if ta.shape[0] != cb.shape[0]:
        raise HandEyeError(f"{ta.shape[0]} tracker poses but {cb.shape[0]} camera poses")
    if ta.shape[0] < 3:
        raise HandEyeError(f"hand-eye needs at least 3 pose pairs, got {ta.shape[0]}")
    a, b = _motion_pairs(ta, cb, min_rotation_deg)
    if a.shape[0] < 2:
        raise HandEyeError(
            f"fewer than 2 motions rotate by >= {min_rotation_deg} deg; move the tool more")
    if method in OPENCV_METHODS:
        x = _opencv(ta, cb, method)
    elif method == "daniilidis":
        x = _daniilidis(a, b)
    else:
        rx = _rotation_park(a, b) if method == "park" else _rotation_tsai(a, b)
        # (R_A - I) t_X = R_X t_B - t_A  (Tsai & Lenz eq. 15)
        lhs = (a[:, :3, :3] - np.eye(3)).reshape(-1, 3)
        rhs = (np.einsum("ij,kj->ki", rx, b[:, :3, 3]) - a[:, :3, 3]).reshape(-1)
        tx, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
        x = np.eye(4)
        x[:3, :3] = rx
        x[:3, 3] = tx
    targets = ta @ x @ cb  # T_TRACKER_TARGET per view
    mean_t = targets[:, :3, 3].mean(axis=0)
    rots = Rotation.from_matrix(targets[:, :3, :3])
    mean_r = rots.mean()
    res_mm = float(np.sqrt(np.mean(np.sum((targets[:, :3, 3] - mean_t) ** 2, axis=1))))
    res_deg = float(np.degrees(np.sqrt(np.mean((mean_r.inv() * rots).magnitude() ** 2))))
    target = Transform.from_rt(mean_r.as_matrix(), mean_t, src="TARGET", dst="TRACKER")
    return HandEyeResult(Transform(x, src=CAMERA, dst=TOOL), target, res_mm, res_deg,
                         int(a.shape[0]), method)
