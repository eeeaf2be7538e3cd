"""``scrubin session new|end``: make or end a mentoring session on a running server.

The server keeps an admin token (``admin-token``, mode 0600) and its TLS certificate in its
state folder (the ``--db`` folder of ``scrubin serve``); these commands read both from there
(``--state``), or from ``--admin-token-file`` / ``--cacert``, and talk to the server over
HTTPS (``POST /api/admin/sessions``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from scrubin.mentor.errors import MentorError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``session`` command group (``new``, ``end``)."""
    from scrubin.mentor.state import default_state_dir

    parser = sub.add_parser("session", help="make or end a remote-mentoring session",
                            description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="session_kind", metavar="KIND")
    kinds.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", required=True, metavar="URL",
                       help="the server's web address, e.g. https://127.0.0.1:8443")
        p.add_argument("--state", type=Path, default=default_state_dir(), metavar="DIR",
                       help="the server's state folder (default: %(default)s)")
        p.add_argument("--admin-token-file", type=Path, metavar="F",
                       help="admin token file (default: STATE/admin-token)")
        p.add_argument("--cacert", type=Path, metavar="F",
                       help="certificate to trust (default: STATE/tls-cert.pem)")

    new = kinds.add_parser(
        "new", help="make a session: one join link and token per role",
        description="Make a session and print the join link and token of each role "
                    "(surgeon, mentor, observer). Tokens are shown once; the server keeps "
                    "only their hashes.")
    common(new)
    new.add_argument("--record", action="store_true",
                     help="the session is recorded (shown to every participant, audited)")
    new.add_argument("--label", default="", help="free text kept with the session")
    new.add_argument("--json", type=Path, metavar="OUT",
                     help="also write {session_id, recording, tokens, links} here (mode 0600)")
    new.set_defaults(func=run_new)

    end = kinds.add_parser("end", help="end a session (its tokens stop working)")
    common(end)
    end.add_argument("session_id", metavar="SESSION_ID")
    end.set_defaults(func=run_end)


def _post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.error  # here, not at import: keeps 'scrubin --help' light
    import urllib.request

    from scrubin.mentor.tls import client_ssl_context

    token_file = args.admin_token_file or args.state / "admin-token"
    cacert = args.cacert or args.state / "tls-cert.pem"
    try:
        admin = token_file.read_text().strip()
    except OSError as exc:
        raise MentorError(f"{token_file}: cannot read the admin token ({exc.strerror}); "
                          "is 'scrubin serve' running with this state folder?") from None
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,}", admin):
        raise MentorError(f"{token_file}: not an admin token (expected one line of URL-safe "
                          "characters, as 'scrubin serve' writes)")
    if not args.server.startswith("https://"):
        raise MentorError(f"--server {args.server!r}: expected an https:// URL")
    url = args.server.rstrip("/") + path
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=client_ssl_context(cacert),
                                    timeout=15) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        raise MentorError(f"{url}: HTTP {exc.code} ({detail})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MentorError(f"{url}: cannot reach the server ({reason})") from None


def run_new(args: argparse.Namespace) -> int:
    """Make a session and print its links."""
    from scrubin.imaging.fileio import write_atomic

    if args.json is not None and not args.json.parent.is_dir():
        raise MentorError(f"--json {args.json}: folder {args.json.parent} does not exist")
    made = _post(args, "/api/admin/sessions", {"record": args.record, "label": args.label})
    print(f"session {made['session_id']}  recording: {'ON' if made['recording'] else 'off'}")
    for role in ("surgeon", "mentor", "observer"):
        print(f"{role:9s} {made['links'][role]}")
        print(f"{'':9s} token {made['tokens'][role]}")
    if args.json is not None:
        def write(tmp: Path) -> None:
            tmp.chmod(0o600)
            tmp.write_text(json.dumps(made, indent=2) + "\n")

        try:
            write_atomic(args.json, write)
        except OSError as exc:
            raise MentorError(f"{args.json}: cannot write ({exc.strerror}); the session "
                              f"{made['session_id']} was made: end it or make another") from None
    return 0


def run_end(args: argparse.Namespace) -> int:
    """End a session."""
    from urllib.parse import quote

    _post(args, f"/api/admin/sessions/{quote(args.session_id, safe='')}/end", {})
    print(f"session {args.session_id} ended")
    return 0
