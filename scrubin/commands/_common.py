"""Option conventions shared by the command modules (light: standard library only).

- ``--json FILE`` always means "write the JSON report to FILE"; the folder of every output
  file must already exist (:func:`require_output_folders`, checked before any work, so a
  typo in a path costs nothing and creates nothing).
- Renamed options keep their old spelling as a hidden alias that warns on stderr
  (:class:`DeprecatedAlias`).
- Warnings are one line ``scrubin: warning: ...`` on stderr (:func:`warn`).

Command modules import only this, :mod:`argparse`, :mod:`pathlib` and numpy at module level;
stage modules (open3d, cv2, SimpleITK, pydicom, numba kernels, scipy, ...) are imported inside
the command's ``run`` so that ``scrubin --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def warn(message: str) -> None:
    """Print ``scrubin: warning: MESSAGE`` on stderr (one line)."""
    print(f"scrubin: warning: {' '.join(message.split())}", file=sys.stderr)


def require_output_folders(*outputs: tuple[str, str | Path | None]) -> None:
    """Refuse output files whose folder does not exist (nothing is created).

    Parameters
    ----------
    outputs
        ``(option, path)`` pairs, e.g. ``("--json", args.json)``; ``None`` paths are skipped.

    Raises
    ------
    FileNotFoundError
        ``"--json /no/such/x.json: output folder /no/such does not exist"``; the command line
        prints it as one line ``scrubin: error: ...`` with exit status 2.
    """
    for option, path in outputs:
        if path is None or str(path) == "-":
            continue
        folder = Path(path).parent
        if not folder.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f"{option} {path}: output folder {folder} does not exist"
            )


class DeprecatedAlias(argparse.Action):
    """An old option spelling: stores into the new option's ``dest`` and warns on stderr.

    Use ``parser.add_argument("--seed", dest="seed_point", action=DeprecatedAlias,
    new="--seed-point", help=argparse.SUPPRESS)``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, new: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        warn(f"{option_string} is deprecated; use {self.new}")
        setattr(namespace, self.dest, values)
