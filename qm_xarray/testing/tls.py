"""Certificates made at test time (needs `cryptography`): a self-signed server certificate, and a
small certificate authority that signs server and client certificates (for mutual TLS)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Any

__all__ = ["self_signed_certificate", "CertificateAuthority"]

_HOSTS = ("localhost", "127.0.0.1")


def _pem_pair(cert: Any, key: Any) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _build(subject: str, key: Any, issuer: tuple[str, Any] | None, *, ca: bool, client: bool) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (name, key) if issuer is None else (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]), issuer[1])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca or issuer is None:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName(_HOSTS[0]), x509.IPAddress(ipaddress.ip_address(_HOSTS[1]))]), critical=False)
    if issuer is not None:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_certificate() -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) valid for a day, for 127.0.0.1 and localhost."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return _pem_pair(_build("qm-xarray test", key, None, ca=True, client=False), key)


@dataclass
class CertificateAuthority:
    """A CA made at test time: `.certificate` (PEM, for clients or servers to trust) and
    `issue(...)` for server or client certificates it signs (valid for 127.0.0.1 and localhost)."""

    name: str = "qm-xarray test CA"

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        self.certificate, _ = _pem_pair(_build(self.name, self._key, None, ca=True, client=False),
                                        self._key)

    def issue(self, subject: str = "localhost", *, client: bool = False) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) signed by this CA; `client` for mutual TLS."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        return _pem_pair(_build(subject, key, (self.name, self._key), ca=False, client=client), key)
