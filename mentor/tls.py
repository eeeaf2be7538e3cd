"""TLS for ``scrubin serve``: a self-signed certificate kept for local use, and its fingerprint.

Patient video and annotations never travel in clear: HTTPS/WSS and gRPC both use the same
certificate. Without ``--tls-cert/--tls-key`` the server makes (once) an ECDSA P-256
self-signed certificate for ``127.0.0.1``, ``::1`` and ``localhost`` (subjectAltName, RFC 5280
section 4.2.1.6), valid for 825 days, kept in its state folder with the key at mode 0600;
clients trust that certificate file, and people compare its SHA-256 fingerprint (printed on
start) with the one their browser shows.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from scrubin.mentor.errors import MentorError

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"


def ensure_self_signed(folder: Path, extra_hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The self-signed pair in ``folder`` (made if missing); returns (cert, key) paths.

    ``extra_hosts`` (IP addresses or DNS names, e.g. the ``--host`` address) are added to
    the subjectAltName of a new certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in ("127.0.0.1", "::1", *extra_hosts):
        try:
            ip = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            names.append(x509.DNSName(host))
            continue
        if ip not in names:
            names.append(ip)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Scrub In (local)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    from scrubin.mentor.certs import write_pair

    issued = write_pair(cert, key, cert_path, key_path)
    return issued.cert, issued.key


def fingerprint_sha256(cert_path: Path) -> str:
    """SHA-256 fingerprint of the certificate's DER form, ``AB:CD:...`` (as browsers show)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def read_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    """The PEM bytes of a certificate chain and key, checked to load together."""
    for p in (cert_path, key_path):
        if not p.is_file():
            raise MentorError(f"{p}: TLS file not found")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise MentorError(f"{cert_path} / {key_path}: not a usable PEM certificate and key "
                          f"({exc})") from None
    return cert_path.read_bytes(), key_path.read_bytes()


def read_ca(path: Path) -> bytes:
    """PEM bytes of a CA certificate file (mutual TLS), checked to hold a certificate."""
    p = Path(path)
    if not p.is_file():
        raise MentorError(f"{p}: CA certificate file not found")
    try:
        ssl.create_default_context(cafile=str(p))
    except (ssl.SSLError, OSError) as exc:
        raise MentorError(f"{p}: not a PEM CA certificate ({exc})") from None
    return p.read_bytes()


def server_ssl_context(cert_path: Path, key_path: Path,
                       client_ca: Path | None = None) -> ssl.SSLContext:
    """An HTTPS server context (TLS 1.2 or newer); with ``client_ca``, mutual TLS.

    With ``client_ca`` the handshake requires a client certificate that chains to it
    (``CERT_REQUIRED``, RFC 8446 section 4.3.2); a client without one is refused by OpenSSL
    before any HTTP request exists (nothing for the application to audit).
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    if client_ca is not None:
        read_ca(client_ca)
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(cert_path: Path, client_cert: Path | None = None,
                       client_key: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts exactly ``cert_path`` (the server's self-signed cert or
    the theatre CA); with ``client_cert``/``client_key`` it presents them (mutual TLS)."""
    if not Path(cert_path).is_file():
        raise MentorError(f"{cert_path}: server certificate not found")
    ctx = ssl.create_default_context(cafile=str(cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None and client_key is not None:
        read_pair(Path(client_cert), Path(client_key))
        ctx.load_cert_chain(client_cert, client_key)
    return ctx
