"""The ``scrubin`` command line.

Each sub-command lives in its own module under :mod:`scrubin.commands` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking
the parsed namespace and returning an exit status). Modules are discovered, so adding a
command means adding one file; a command group (``scrubin register points|surface``) is a
sub-package whose modules are discovered the same way.

User mistakes (bad paths, corrupt files, impossible requests) raise a stage's error class;
they are printed as one line ``scrubin: error: ...`` and exit with status 2, as is an
``OSError`` (a missing output folder, a full disk, a permission refused). Anything else is a
bug and keeps its traceback.

Command modules import heavy libraries (open3d, cv2, SimpleITK, pydicom, numba kernels,
scipy, ...) only inside their ``func``: building the parser, hence ``scrubin --help``, stays
light (tests/scrubin/test_cli.py checks the imported modules).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scrubin import commands
from scrubin.commands._discover import register_all
from scrubin.imaging.errors import ImagingError
from scrubin.mentor.errors import MentorError
from scrubin.overlay.errors import OverlayError
from scrubin.registration.errors import RegistrationError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ImagingError,
    RegistrationError,
    OverlayError,
    MentorError,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered sub-command."""
    parser = argparse.ArgumentParser(
        prog="scrubin",
        description="Scrub In: DICOM to 3-D models, registration, AR overlay, remote mentoring.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register_all(sub, commands)
    return parser


def _preprocess(argv: list[str]) -> list[str]:
    """Let option values start with '-' (``--seed -12.5,30,40``, ``--threshold -1000:-400``).

    argparse treats a value such as ``-12.5,30,40`` as an option; joining it to its option
    with '=' keeps it a value. Only values that look numeric are joined.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            arg.startswith("--")
            and "=" not in arg
            and nxt is not None
            and len(nxt) > 1
            and nxt[0] == "-"
            and (nxt[1].isdigit() or nxt[1] == ".")
        ):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def os_error_text(exc: OSError) -> str:
    """One line for an ``OSError``: ``FILE: reason`` (e.g. ``out.glb: No space left on device``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename else ""
    return " ".join(f"{where}{reason}".split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scrubin`` and ``python -m scrubin``; returns the exit status."""
    args_list = _preprocess(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        status = args.func(args)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"scrubin: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"scrubin: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scrubin: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
