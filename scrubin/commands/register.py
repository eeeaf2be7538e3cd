"""``scrubin register points|surface``: point-based and surface registration."""

from __future__ import annotations

import argparse

from scrubin.workflows import register_points, register_surface


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``register`` with its ``points`` and ``surface`` sub-commands."""
    parser = sub.add_parser("register", help="register fiducial points or a surface to the model")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    points = kinds.add_parser("points", help="closed-form rigid registration of point sets")
    register_points.add_arguments(points)
    points.set_defaults(func=register_points.run)
    surface = kinds.add_parser("surface", help="register a model surface to a measured cloud")
    register_surface.add_arguments(surface)
    surface.set_defaults(func=register_surface.run)
