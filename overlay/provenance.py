"""The one Frame-of-Reference check of the overlay: models and registration from one scan.

A FrameOfReferenceUID (0020,0052; PS3.3 C.7.4.1.1.1) names the patient coordinate system of
a scan. A model drawn with a registration of another scan lands in the wrong place, so
every place that brings a model and a registration together (renderer pose, pipeline set-up,
scene export, the overlay workflow's early check) calls :func:`check_frame_of_reference`.
An empty UID means "unknown" and is not compared (the workflow decides whether unknown
provenance is acceptable).
"""

from __future__ import annotations

from scrubin.overlay.errors import OverlayError


def check_frame_of_reference(registration_uid: str, model_uid: str,
                             model: str = "the models'") -> None:
    """Refuse a registration and a model whose FrameOfReferenceUIDs differ.

    Parameters
    ----------
    registration_uid
        ``frame_of_reference_uid`` of the registration's provenance ("" when unknown).
    model_uid
        FrameOfReferenceUID of the model(s) ("" when unknown).
    model
        The model(s) named in the message, possessive (e.g. ``"model 'skull''s"``).

    Raises
    ------
    OverlayError
        Both UIDs known and different.
    """
    if registration_uid and model_uid and registration_uid != model_uid:
        raise OverlayError(f"registration FrameOfReferenceUID {registration_uid} differs from "
                           f"{model} {model_uid}: the models belong to another scan")
