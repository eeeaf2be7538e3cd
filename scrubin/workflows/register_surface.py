"""``scrubin register surface``: register a model surface (CT) to a measured point cloud (REF).

Reads the model mesh (STL/PLY/OBJ/GLB, LPS mm) and the cloud (PLY/PCD/CSV/TXT/XYZ in the unit
given by ``--cloud-unit``), refuses a unit mismatch, runs :func:`scrubin.registration.surface.
register_surface` (global initialisation unless ``--init`` gives a start transform) and writes
the result JSON atomically (a temporary file renamed into place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrubin.imaging.fileio import write_json_atomic
from scrubin.registration.clouds import check_units, read_cloud, read_surface
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.surface import SurfaceRegistration, register_surface


def run_register_surface(
    fixed: str | Path,
    moving: str | Path,
    out_json: str | Path | None = None,
    init: str | Path | None = None,
    cloud_unit: str = "mm",
    max_distance_mm: float = 10.0,
    fixed_frame: str = "REF",
    seed: int = 0,
) -> tuple[SurfaceRegistration, dict[str, Any]]:
    """Register ``moving`` (model mesh, CT) to ``fixed`` (cloud); write ``out_json`` if given.

    Returns the registration and the JSON document written.
    """
    if not max_distance_mm > 0:
        raise RegistrationError(f"--max-distance must be > 0 mm, got {max_distance_mm}")
    model = read_surface(moving)
    cloud = read_cloud(fixed, unit=cloud_unit, frame=fixed_frame)
    check_units(cloud, model, cloud_label=f"{fixed}: cloud (read as {cloud_unit})")
    start = None
    if init is not None:
        start = Transform.load(init)
        if (start.src, start.dst) != (model.frame, cloud.frame):
            raise RegistrationError(
                f"{init}: transform maps {start.src} to {start.dst}; expected "
                f"{model.frame} to {cloud.frame} (moving to fixed)"
            )
    result = register_surface(model, cloud, init=start, max_distance_mm=max_distance_mm,
                              seed=seed)
    doc: dict[str, Any] = {
        **result.to_json(),
        "inputs": {
            "fixed": str(fixed),
            "moving": str(moving),
            "init": None if init is None else str(init),
            "cloud_unit": cloud_unit,
            "max_distance_mm": max_distance_mm,
            "fixed_points": len(cloud),
            "moving_points": len(model),
        },
    }
    if out_json is not None:
        write_json_atomic(Path(out_json), doc, make_parents=True)
    return result, doc
