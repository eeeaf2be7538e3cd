"""``scrubin certs OUT``: a local CA and server/client certificates for one theatre.

Makes ``OUT/ca.pem`` + ``ca-key.pem`` (once; an existing CA is reused), ``server.pem`` +
``server-key.pem`` for the ``--host`` names, and ``client-NAME.pem`` + ``client-NAME-key.pem``
per ``--client NAME`` (mutual TLS). Keys are mode 0600. Then::

    scrubin serve --tls-cert OUT/server.pem --tls-key OUT/server-key.pem --client-ca OUT/ca.pem
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``certs`` command."""
    parser = sub.add_parser(
        "certs", help="make a local CA and server/client certificates (mutual TLS)",
        description=__doc__.split("\n\n")[0] + " Keys: ECDSA P-256; files written atomically.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="existing output folder")
    parser.add_argument("--host", action="append", default=[], metavar="H",
                        help="server address or DNS name (repeatable; default 127.0.0.1 and "
                             "localhost)")
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="issue a client certificate for NAME (repeatable)")
    parser.add_argument("--days", type=int, default=825,
                        help="validity of the server/client certificates (default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing server/client files (the CA is always kept)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the files and print their paths and SHA-256 fingerprints."""
    from scrubin.mentor.certs import make_theatre
    from scrubin.mentor.tls import fingerprint_sha256

    hosts = list(args.host) or ["127.0.0.1", "localhost"]
    made = make_theatre(args.out, hosts, list(args.client), args.days, overwrite=args.force)
    for what, issued in made.items():
        print(f"{what:16s} {issued.cert}  key {issued.key}")
        print(f"{'':16s} SHA-256 {fingerprint_sha256(issued.cert)}")
    return 0
