"""A local certificate authority for one theatre: CA, server and client certificates.

``scrubin certs OUT`` makes (once) a CA in ``OUT`` and issues from it a server certificate
(subjectAltName = the given hosts) and client certificates (one per name) for mutual TLS.
Every key is ECDSA P-256 (FIPS 186-4 curve, RFC 5480), every signature ECDSA-SHA256.
Extensions follow RFC 5280:

- CA: basicConstraints ``cA=TRUE, pathLenConstraint=0`` critical (section 4.2.1.9),
  keyUsage ``keyCertSign, cRLSign`` critical (4.2.1.3), subjectKeyIdentifier (4.2.1.2).
- Leaves: basicConstraints ``cA=FALSE`` critical, keyUsage ``digitalSignature`` critical,
  extendedKeyUsage ``id-kp-serverAuth`` or ``id-kp-clientAuth`` (4.2.1.12),
  subjectAltName (4.2.1.6: IP addresses as iPAddress, names as dNSName; a client's name as
  dNSName too, so a server could log it), authorityKeyIdentifier (4.2.1.1).

Files (PEM): ``ca.pem`` / ``ca-key.pem``, ``server.pem`` / ``server-key.pem``,
``client-NAME.pem`` / ``client-NAME-key.pem``. Keys are written with mode 0600, everything
atomically (a crash leaves no half-written file). Servers are given ``server.pem`` and
``server-key.pem`` (``scrubin serve --tls-cert/--tls-key``) and ``ca.pem`` as the client CA
(``--client-ca``); clients trust ``ca.pem`` and present their ``client-NAME`` pair.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrubin.imaging.fileio import write_atomic
from scrubin.mentor.errors import MentorError

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_DAYS = 3650


class CertError(MentorError):
    """A refused certificate request (bad host, name, validity or CA files)."""


@dataclass(frozen=True)
class Issued:
    """Paths of one certificate and its key."""

    cert: Path
    key: Path


def client_files(name: str) -> tuple[str, str]:
    """File names of client ``name``'s certificate and key."""
    return f"client-{name}.pem", f"client-{name}-key.pem"


def check_name(name: str) -> str:
    """A client name usable in a file name and a dNSName: letters, digits, ``._-``, <= 63."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CertError(f"client name {name!r}: expected letters, digits, '.', '_' or '-' "
                        "(1..63 characters, starting with a letter or digit)")
    return name


def _general_names(hosts: Sequence[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for host in hosts:
        h = str(host).strip()
        try:
            gn: Any = x509.IPAddress(ipaddress.ip_address(h))
        except ValueError:
            label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
            if not re.fullmatch(rf"{label}(\.{label})*", h):
                raise CertError(f"--host {host!r}: expected an IP address or a DNS name"
                                ) from None
            gn = x509.DNSName(h.lower())
        if gn not in out:
            out.append(gn)
    return out


def _check_days(days: int) -> int:
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise CertError(f"--days {days!r}: expected a whole number of days in 1..{MAX_DAYS}")
    return days


def write_pair(cert: Any, key: Any, cert_path: Path, key_path: Path) -> Issued:
    """Write a certificate (PEM) and its private key (PKCS#8 PEM, mode 0600), each atomically."""
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())

    def write_key(tmp: Path) -> None:
        os.chmod(tmp, 0o600)
        tmp.write_bytes(key_pem)

    write_atomic(key_path, write_key)
    write_atomic(cert_path, lambda tmp: tmp.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)))
    return Issued(cert_path, key_path)


def _validity(days: int, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    start = not_before if not_before is not None else \
        dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return start, start + dt.timedelta(days=days)


def make_ca(folder: Path, name: str = "Scrub In theatre CA", days: int = MAX_DAYS) -> Issued:
    """Make the CA pair ``ca.pem`` / ``ca-key.pem`` in ``folder`` (refused if present)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    _check_days(days)
    folder = Path(folder)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.exists() or key_path.exists():
        raise CertError(f"{folder}: a CA is already there ({CA_CERT}); not replaced")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Scrub In (local)")])
    start, end = _validity(days, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return write_pair(cert, key, cert_path, key_path)


def load_ca(folder: Path) -> tuple[Any, Any]:
    """The CA certificate and key of ``folder`` (CertError naming the file if unusable)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    for p in (cert_path, key_path):
        if not p.is_file():
            raise CertError(f"{p}: CA file not found (make the CA first)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise CertError(f"{cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertError(f"{key_path}: not an unencrypted PEM private key") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise CertError(f"{key_path}: does not belong to {cert_path}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertError(f"{cert_path}: not a CA certificate (basicConstraints cA is not TRUE)")
    return cert, key


def issue(folder: Path, kind: str, common_name: str, hosts: Sequence[str] = (),
          days: int = 825, cert_path: Path | None = None, key_path: Path | None = None,
          not_before: dt.datetime | None = None, overwrite: bool = False) -> Issued:
    """Issue a leaf certificate from the CA in ``folder``.

    Parameters
    ----------
    folder
        Folder holding ``ca.pem`` / ``ca-key.pem``; the leaf is written there too unless
        ``cert_path`` / ``key_path`` are given.
    kind
        ``"server"`` (extendedKeyUsage serverAuth; SAN = ``hosts``, at least one) or
        ``"client"`` (clientAuth; SAN = dNSName ``common_name`` plus ``hosts``).
    common_name
        Subject CN; for clients, the client name (checked by :func:`check_name`).
    days
        Validity in days from ``not_before`` (default now - 5 min), 1..3650.
    overwrite
        Replace existing leaf files (refused otherwise).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if kind not in ("server", "client"):
        raise CertError(f"certificate kind {kind!r}: expected 'server' or 'client'")
    _check_days(days)
    folder = Path(folder)
    if kind == "client":
        check_name(common_name)
        names = _general_names([common_name, *hosts])
        default = client_files(common_name)
    else:
        if not hosts:
            raise CertError("server certificate: give at least one --host (IP or DNS name)")
        names = _general_names(hosts)
        default = (SERVER_CERT, SERVER_KEY)
    cert_path = Path(cert_path) if cert_path is not None else folder / default[0]
    key_path = Path(key_path) if key_path is not None else folder / default[1]
    if not overwrite:
        for p in (cert_path, key_path):
            if p.exists():
                raise CertError(f"{p}: already exists; not replaced (use --force)")
    ca_cert, ca_key = load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, not_before)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Scrub In (local)")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return write_pair(cert, key, cert_path, key_path)


def make_theatre(folder: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"),
                 clients: Sequence[str] = (), days: int = 825,
                 overwrite: bool = False) -> dict[str, Issued]:
    """The whole set for a theatre: the CA (made if missing), a server and client certificates.

    Returns ``{"ca": ..., "server": ..., "client:NAME": ...}``. All names and hosts are
    checked before anything is written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CertError(f"{folder}: output folder does not exist")
    _check_days(days)
    _general_names(hosts)
    for c in clients:
        check_name(c)
    if len(set(clients)) != len(list(clients)):
        raise CertError("--client: the same name given twice")
    if not hosts:
        raise CertError("server certificate: give at least one --host (IP or DNS name)")
    if not overwrite:
        for f in (SERVER_CERT, SERVER_KEY, *(n for c in clients for n in client_files(c))):
            if (folder / f).exists():
                raise CertError(f"{folder / f}: already exists; not replaced (use --force)")
    out: dict[str, Issued] = {}
    if (folder / CA_CERT).exists():
        load_ca(folder)
        out["ca"] = Issued(folder / CA_CERT, folder / CA_KEY)
    else:
        out["ca"] = make_ca(folder)
    out["server"] = issue(folder, "server", str(hosts[0]), hosts, days, overwrite=overwrite)
    for c in clients:
        out[f"client:{c}"] = issue(folder, "client", c, (), days, overwrite=overwrite)
    return out
