"""Which frame and which axis convention a mesh file's coordinates are in.

Two questions, two tags:

* **Axis convention** (``SPACE``), 3D Slicer's convention (``vtkMRMLModelStorageNode``,
  Slicer >= 4.11, "Model files are now saved in LPS coordinate system"): the STL header (the
  80-byte binary header or the ASCII ``solid`` line), the PLY ``comment`` lines and the OBJ
  ``#`` comment lines hold ``SPACE=RAS`` or ``SPACE=LPS``. Slicer's
  ``GetCoordinateSystemFromFileHeader`` searches that text for the substring ``SPACE=RAS``
  first, then ``SPACE=LPS``; a file holding neither is read in the storage node's default
  coordinate system, which Slicer's constructor sets to LPS (only a pre-4.11 MRML *scene*
  without the ``coordinateSystem`` attribute assumes RAS). We follow that rule: tag RAS ->
  RAS, tag LPS or no tag -> LPS. RAS -> LPS negates x and y (Slicer's
  ``ConvertBetweenRASAndLPS``: ``Scale(-1, -1, 1)``, a rotation by 180 degrees about z, so
  face orientation is kept). Scrub In always writes ``SPACE=LPS``.
* **Frame** (which coordinate system of the operating room): ``CT`` (the scan's patient
  space) or ``REF`` (already placed by ``T_REF_CT``, e.g. a scene GLB), written as
  ``FRAME=CT`` in the STL header, a ``frame CT`` comment in PLY/OBJ, and ``frame`` in a GLB's
  ``asset.extras`` and each mesh's ``extras`` (the frame of the coordinates after the node
  transforms). A file that does not say (other software, a GLB without Scrub In's extras)
  has an unknown frame (``""``). Files written by Scrub In before the tag existed are
  recognised by their old markers (STL header ``scrubin NAME LPS mm``, comment
  ``frame LPS unit mm``, GLB ``source_frame`` without node transforms; all were CT) and a
  pre-tag scene GLB by its ``scenes[].extras.world_frame``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import CT_FRAME, UNKNOWN_FRAME, Mesh

#: RAS -> LPS (and back): x and y negated (Slicer ``ConvertBetweenRASAndLPS``).
RAS_TO_LPS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Old (pre-tag) GLB marker of Scrub In's CT-frame models.
_LEGACY_GLB_SOURCE_FRAME = "DICOM LPS mm"
_FRAME_RE = re.compile(r"(?:^|\s)FRAME=([A-Za-z0-9_]+)")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,()+-]")


def slicer_space(text: str) -> str | None:
    """``"RAS"``, ``"LPS"`` or None: Slicer's ``GetCoordinateSystemFromFileHeader`` rule."""
    if "SPACE=RAS" in text:
        return "RAS"
    if "SPACE=LPS" in text:
        return "LPS"
    return None


def _safe_name(name: str) -> str:
    return _NAME_UNSAFE.sub("_", name)


def stl_header(mesh: Mesh) -> bytes:
    """80-byte binary STL header: ``SPACE=LPS FRAME=CT UNIT=mm scrubin NAME``.

    The name is sanitised (no ``=``) so it cannot forge a tag; it never starts with
    ``solid`` (which would make readers take a binary file for ASCII).
    """
    frame = f" FRAME={mesh.frame}" if mesh.frame else ""
    deid = mesh.provenance.get("patient_identity_removed", "")  # YES/NO/UNKNOWN (scrubin deid)
    deid = f" DEID={deid}" if deid else ""
    text = f"SPACE=LPS{frame} UNIT=mm{deid} scrubin {_safe_name(mesh.name)}"
    return text.encode("ascii", "replace")[:80].ljust(80, b" ")


def parse_stl_header(text: str) -> tuple[str, str, str]:
    """``(name, frame, space)`` from an STL header / ``solid`` line (frame ``""`` if absent)."""
    text = text.replace("\0", " ").strip()
    space = slicer_space(text) or "LPS"
    m = _FRAME_RE.search(text)
    frame = m.group(1) if m else UNKNOWN_FRAME
    name = text.partition("scrubin ")[2].strip() if "scrubin " in text else ""
    if not m and text.startswith("scrubin ") and text.endswith("LPS mm"):  # pre-tag writer
        frame, name = CT_FRAME, name.removesuffix("LPS mm").strip()
    return name, frame, space


def comment_lines(mesh: Mesh) -> list[str]:
    """PLY ``comment`` / OBJ ``#`` lines: axis convention, frame, unit, name, UIDs, colour."""
    lines = ["SPACE=LPS"]
    if mesh.frame:
        lines.append(f"frame {mesh.frame}")
    return lines + [
        "unit mm",
        f"name {mesh.name}",
        f"SeriesInstanceUID {mesh.provenance.get('series_instance_uid', '')}",
        f"FrameOfReferenceUID {mesh.provenance.get('frame_of_reference_uid', '')}",
        f"PatientIdentityRemoved {mesh.provenance.get('patient_identity_removed', 'UNKNOWN')}",
        "color " + " ".join(f"{c:.6g}" for c in mesh.color),
    ]


def apply_comments(mesh: Mesh, comments: Sequence[str]) -> Mesh:
    """Name, UIDs, colour and frame from PLY/OBJ comments; RAS-tagged vertices go to LPS."""
    mesh.frame = UNKNOWN_FRAME
    for c in comments:
        key, _, value = c.strip().partition(" ")
        value = value.strip()
        if key == "name":
            mesh.name = value
        elif key == "SeriesInstanceUID":
            mesh.provenance["series_instance_uid"] = value
        elif key == "FrameOfReferenceUID":
            mesh.provenance["frame_of_reference_uid"] = value
        elif key == "color":
            rgba = [float(x) for x in value.split()]
            mesh.color = tuple(rgba)  # type: ignore[assignment]
        elif key == "frame":
            mesh.frame = CT_FRAME if value == "LPS unit mm" else value  # pre-tag writer: CT
    mesh = Mesh(mesh.vertices, mesh.faces, mesh.name, mesh.color, mesh.provenance,
                frame=mesh.frame)
    return to_lps(mesh, slicer_space("\n".join(comments)) or "LPS")


def to_lps(mesh: Mesh, space: str) -> Mesh:
    """The mesh with RAS coordinates converted to LPS (unchanged when ``space`` is LPS)."""
    return mesh.transformed(RAS_TO_LPS) if space == "RAS" else mesh


def glb_frame(doc: dict, mesh_extras: dict, node_matrix: np.ndarray) -> str:
    """Frame of one GLB mesh's coordinates after its node transform (module docstring)."""
    asset_extras = doc.get("asset", {}).get("extras", {}) or {}
    declared = mesh_extras.get("frame", asset_extras.get("frame"))
    if isinstance(declared, str):
        return declared  # "" when the writer itself did not know
    worlds = {s.get("extras", {}).get("world_frame") for s in doc.get("scenes", [])
              if isinstance(s, dict)} - {None, ""}
    if len(worlds) == 1:
        return str(worlds.pop())
    legacy = asset_extras.get("source_frame") == _LEGACY_GLB_SOURCE_FRAME
    if legacy and not worlds and np.allclose(node_matrix, np.eye(4)):
        return CT_FRAME
    return UNKNOWN_FRAME


def check_frames(meshes: Sequence[Mesh], path: str | Path, expected_frame: str | None,
                 allow_unknown_frame: bool) -> None:
    """Refuse meshes in another frame than ``expected_frame`` (and, unless allowed, unknown)."""
    if expected_frame is None:
        return
    for m in meshes:
        if m.frame == UNKNOWN_FRAME:
            if not allow_unknown_frame:
                raise MeshError(f"mesh file {str(path)!r} does not say which frame its "
                                f"coordinates are in; expected frame {expected_frame!r}")
        elif m.frame != expected_frame:
            raise MeshError(f"mesh file {str(path)!r}: model {m.name!r} is in frame "
                            f"{m.frame!r}, expected frame {expected_frame!r}")
