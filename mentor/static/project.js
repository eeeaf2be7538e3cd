// Pinhole camera with OpenCV's distortion model (k1, k2, p1, p2, k3), in plain JS.
//
// Implements the projection of OpenCV's calib3d documentation ("Camera Calibration and 3D
// Reconstruction", the pinhole model with the Brown-Conrady radial/tangential terms, the
// same equations as cv2.projectPoints for 5 coefficients):
//   [X Y Z]_cam = R * [X Y Z]_ref + t                (T_CAMERA_REF, mm)
//   x' = X/Z, y' = Y/Z, r^2 = x'^2 + y'^2
//   x'' = x' (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x' y' + p2 (r^2 + 2 x'^2)
//   y'' = y' (1 + k1 r^2 + k2 r^4 + k3 r^6) + p1 (r^2 + 2 y'^2) + 2 p2 x' y'
//   u = fx x'' + cx, v = fy y'' + cy                  (pixels, centres at integers)
// Normalised image coordinates (mentor/DESIGN.md "Annotations"): x = (u + 0.5) / width.

/** Minimum camera-frame depth (mm) for a point to be drawn. */
export const MIN_DEPTH_MM = 1.0;

/**
 * Project REF-frame points (mm) to pixels of a frame.
 * @param {Array<Array<number>|null>} pointsRefMm  points [x, y, z] in the REF frame, mm (null allowed)
 * @param {Array<number>} T_camera_ref  16 numbers, row-major 4x4, maps REF mm -> CAMERA mm
 * @param {Array<number>} K  [fx, fy, cx, cy] in pixels
 * @param {Array<number>} dist  [k1, k2, p1, p2, k3] (missing terms are 0)
 * @returns {Array<Array<number>|null>} pixel [u, v] per point; null when the input is null
 *   or the point is behind the camera (Z < MIN_DEPTH_MM)
 */
export function projectPointsRef(pointsRefMm, T_camera_ref, K, dist) {
  const T = T_camera_ref;
  const [fx, fy, cx, cy] = K;
  const d = dist || [];
  const k1 = d[0] || 0, k2 = d[1] || 0, p1 = d[2] || 0, p2 = d[3] || 0, k3 = d[4] || 0;
  const out = [];
  for (const p of pointsRefMm) {
    if (p === null || p === undefined) { out.push(null); continue; }
    const X = T[0] * p[0] + T[1] * p[1] + T[2] * p[2] + T[3];
    const Y = T[4] * p[0] + T[5] * p[1] + T[6] * p[2] + T[7];
    const Z = T[8] * p[0] + T[9] * p[1] + T[10] * p[2] + T[11];
    if (!(Z >= MIN_DEPTH_MM)) { out.push(null); continue; }
    const x = X / Z, y = Y / Z;
    const r2 = x * x + y * y;
    const radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
    const xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x);
    const yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y;
    out.push([fx * xd + cx, fy * yd + cy]);
  }
  return out;
}

/** Normalised image coordinates [0,1]^2 -> pixel (OpenCV convention, centres at integers). */
export function normToPixel(x, y, width, height) {
  return [x * width - 0.5, y * height - 0.5];
}

/** Pixel (OpenCV convention) -> normalised image coordinates. */
export function pixelToNorm(u, v, width, height) {
  return [(u + 0.5) / width, (v + 0.5) / height];
}
