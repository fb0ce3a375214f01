"""The mesh CA, node identities, and the check every node runs on a peer.

A CA directory holds::

    ca.key      the CA's Ed25519 private key (0600)
    ca.crt      the self-signed CA certificate (URI SAN spiffe://<trust domain>)
    crl.pem     the CRL, signed by the CA, re-issued on every revocation
    issued.json serial -> node, validity, revoked (the CA's own bookkeeping)

A node certificate carries exactly one URI SAN, ``spiffe://<trust domain>/node/<id>``,
is not a CA, and is signed by the CA. Its private key (Ed25519) is written
0600 next to it. :class:`TrustStore` is what a node uses to accept a peer:
chain to the mesh CA, validity, the SPIFFE identity, the CRL and a deny list.
Each refusal is a :class:`PeerRefused` whose message says why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import AlreadyExists, ConfigError, NotFound, PermissionDenied

DEFAULT_TRUST_DOMAIN = "mesh.local"
_NODE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_TD_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")
_UTC = dt.timezone.utc


class PeerRefused(PermissionDenied):
    """A peer's certificate or handshake was refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_node_id(node: str) -> str:
    """Validate a node name (lower-case letters, digits, ``. _ -``; at most 63)."""
    if not isinstance(node, str) or not _NODE_RE.match(node):
        raise ConfigError(f"node {node!r}: a node id is 1-63 lower-case letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit", key="node")
    return node


def spiffe_id(trust_domain: str, node: str) -> str:
    """``spiffe://<trust_domain>/node/<node>``."""
    return f"spiffe://{trust_domain}/node/{check_node_id(node)}"


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as an owner-only (0600) file, created 0600 from the start."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_cert(path: str | os.PathLike) -> x509.Certificate:
    """Read a PEM certificate; ConfigError naming the file when it is not one."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise NotFound(f"{path}: no such certificate file") from None
    except ValueError as e:
        raise ConfigError(f"not a PEM certificate ({e})", file=str(path)) from None


def load_key(path: str | os.PathLike) -> ed25519.Ed25519PrivateKey:
    """Read an owner-only PEM Ed25519 private key; refuse one others can read."""
    p = Path(path)
    try:
        st = p.stat()
        data = p.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such key file") from None
    if st.st_mode & 0o077:
        raise PermissionDenied(f"{path}: key file is readable by others "
                               f"(mode {st.st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as e:
        raise ConfigError(f"not a PEM private key ({e})", file=str(path)) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError("not an Ed25519 private key", file=str(path))
    return key


def _pem_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def node_of(cert: x509.Certificate, trust_domain: str) -> str:
    """The node id in ``cert``'s single SPIFFE URI SAN; PeerRefused if it has none or several."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerRefused("certificate has no subjectAltName (no SPIFFE ID)") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PeerRefused(f"certificate has {len(uris)} URI SANs, a node has exactly one "
                          "SPIFFE ID")
    prefix = f"spiffe://{trust_domain}/node/"
    if not uris[0].startswith(prefix):
        raise PeerRefused(f"SPIFFE ID {uris[0]!r} is not a node of trust domain "
                          f"{trust_domain!r} (expected {prefix}<id>)")
    node = uris[0][len(prefix):]
    if not _NODE_RE.match(node):
        raise PeerRefused(f"SPIFFE ID {uris[0]!r}: bad node id")
    return node


def trust_domain_of(ca_cert: x509.Certificate) -> str:
    """The trust domain named in the CA certificate's URI SAN ``spiffe://<td>``."""
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for u in san.get_values_for_type(x509.UniformResourceIdentifier):
            if u.startswith("spiffe://"):
                return u[len("spiffe://"):].rstrip("/")
    except x509.ExtensionNotFound:
        pass
    raise ConfigError("the CA certificate names no trust domain (URI SAN spiffe://...)")


# -- the CA -----------------------------------------------------------------------------
class MeshCA:
    """A CA directory: init, issue node certificates, revoke them (CRL)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        """Open an existing CA directory (see :meth:`init` to make one)."""
        self.dir = Path(directory)
        if not (self.dir / "ca.crt").exists() or not (self.dir / "ca.key").exists():
            raise NotFound(f"{self.dir}: not a mesh CA directory (no ca.crt/ca.key; run "
                           "`pydp tunnel ca init`)")
        self.cert = load_cert(self.dir / "ca.crt")
        self._key = load_key(self.dir / "ca.key")
        self.trust_domain = trust_domain_of(self.cert)

    def __repr__(self) -> str:
        return f"MeshCA({str(self.dir)!r}, trust_domain={self.trust_domain!r})"

    @classmethod
    def init(cls, directory: str | os.PathLike, trust_domain: str = DEFAULT_TRUST_DOMAIN,
             days: int = 3650, force: bool = False) -> MeshCA:
        """Create a CA: an Ed25519 key (0600), a self-signed certificate, an empty CRL."""
        d = Path(directory)
        if not isinstance(trust_domain, str) or not _TD_RE.match(trust_domain):
            raise ConfigError(f"trust domain {trust_domain!r}: lower-case letters, digits, "
                              "'.' and '-'", key="trust_domain")
        if days < 1:
            raise ConfigError(f"--days {days}: must be at least 1", key="days")
        if (d / "ca.key").exists() and not force:
            raise AlreadyExists(f"{d}: a CA already exists there (use --force to replace it)")
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pydp mesh"),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"pydp mesh CA {trust_domain}")])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                    critical=False)
                .sign(key, None))
        write_private(d / "ca.key", _pem_key(key))
        _write_public(d / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write_public(d / "issued.json", b"{}\n")
        ca = cls(d)
        ca._write_crl()
        return ca

    # -- bookkeeping --
    def issued(self) -> dict[str, dict]:
        """serial (hex) -> {node, not_before, not_after, revoked}."""
        p = self.dir / "issued.json"
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise ConfigError(f"corrupt ({e})", file=str(p)) from None

    def _save_issued(self, rec: dict[str, dict]) -> None:
        _write_public(self.dir / "issued.json",
                      (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode())

    def issue(self, node: str, out_dir: str | os.PathLike | None = None, days: float = 30,
              not_before: dt.datetime | None = None) -> tuple[Path, Path]:
        """Issue a certificate for ``node``: writes ``<node>.crt`` and ``<node>.key`` (0600).

        ``out_dir`` defaults to ``<ca>/nodes``. Issuing again for the same
        node is a rotation: a new key and a new serial; the old certificate
        stays valid until it expires or is revoked. Returns (cert, key) paths.
        """
        check_node_id(node)
        if days <= 0:
            raise ConfigError(f"--days {days:g}: must be positive", key="days")
        out = Path(out_dir) if out_dir is not None else self.dir / "nodes"
        out.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        start = not_before or (_now() - dt.timedelta(minutes=5))
        end = start + dt.timedelta(days=days)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                            "pydp mesh"),
                                         x509.NameAttribute(NameOID.COMMON_NAME, node)]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                      ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ca_ski), critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe_id(self.trust_domain, node))]),
                    critical=True)
                .sign(self._key, None))
        crt_path, key_path = out / f"{node}.crt", out / f"{node}.key"
        write_private(key_path, _pem_key(key))
        _write_public(crt_path, cert.public_bytes(serialization.Encoding.PEM))
        rec = self.issued()
        rec[f"{cert.serial_number:x}"] = {"node": node, "not_before": start.isoformat(),
                                           "not_after": end.isoformat(), "revoked": None}
        self._save_issued(rec)
        return crt_path, key_path

    def revoke(self, node: str | None = None, serial: str | None = None) -> list[str]:
        """Revoke every certificate of ``node``, or one ``serial`` (hex); re-issue the CRL.

        Returns the serials newly revoked. NotFound when nothing matches.
        """
        if (node is None) == (serial is None):
            raise ConfigError("revoke: give a node or --serial (one of them)", key="node")
        rec = self.issued()
        if serial is not None:
            s = serial.lower().removeprefix("0x")
            if s not in rec:
                raise NotFound(f"serial {serial}: not issued by this CA")
            hits = [s]
        else:
            check_node_id(node)  # type: ignore[arg-type]
            hits = [s for s, r in rec.items() if r["node"] == node]
            if not hits:
                raise NotFound(f"node {node}: this CA issued it no certificate")
        now = _now().isoformat()
        new = [s for s in hits if not rec[s]["revoked"]]
        for s in new:
            rec[s]["revoked"] = now
        self._save_issued(rec)
        self._write_crl()
        return new

    def refresh_crl(self, days: int = 7) -> Path:
        """Re-issue the CRL (same revocations, next number, new nextUpdate); its path."""
        if days < 1:
            raise ConfigError(f"--days {days}: must be at least 1", key="days")
        self._write_crl(days)
        return self.dir / "crl.pem"

    def _write_crl(self, days: int = 7) -> None:
        now = _now()
        number = 1
        p = self.dir / "crl.pem"
        if p.exists():
            try:
                old = x509.load_pem_x509_crl(p.read_bytes())
                number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
            except (ValueError, x509.ExtensionNotFound):
                pass
        b = (x509.CertificateRevocationListBuilder()
             .issuer_name(self.cert.subject)
             .last_update(now - dt.timedelta(minutes=5))
             .next_update(now + dt.timedelta(days=days))
             .add_extension(x509.CRLNumber(number), critical=False))
        for s, r in sorted(self.issued().items()):
            if r.get("revoked"):
                b = b.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(int(s, 16))
                    .revocation_date(dt.datetime.fromisoformat(r["revoked"])).build())
        crl = b.sign(self._key, None)
        _write_public(p, crl.public_bytes(serialization.Encoding.PEM))


# -- a node's own identity --------------------------------------------------------------
@dataclass
class NodeIdentity:
    """A node's certificate and private key (the key is never shown)."""

    node: str
    cert: x509.Certificate
    key: ed25519.Ed25519PrivateKey
    cert_path: str = ""
    key_path: str = ""

    def __repr__(self) -> str:
        return (f"NodeIdentity(node={self.node!r}, serial={self.cert.serial_number:x}, "
                f"key=<hidden>)")

    @classmethod
    def load(cls, cert_path: str | os.PathLike, key_path: str | os.PathLike,
             trust_domain: str = DEFAULT_TRUST_DOMAIN) -> NodeIdentity:
        """Load and cross-check a certificate and its key."""
        cert = load_cert(cert_path)
        key = load_key(key_path)
        pub = serialization.PublicFormat.Raw
        if (cert.public_key().public_bytes(serialization.Encoding.Raw, pub)
                != key.public_key().public_bytes(serialization.Encoding.Raw, pub)):
            raise ConfigError(f"{key_path} is not the key of {cert_path}", key="key")
        try:
            node = node_of(cert, trust_domain)
        except PeerRefused as e:
            raise ConfigError(f"{cert_path}: {e.reason}", key="cert") from None
        return cls(node, cert, key, str(cert_path), str(key_path))

    def cert_der(self) -> bytes:
        """The certificate in DER, as sent in the handshake."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self.key.sign(data)


# -- the check a node runs on a peer ----------------------------------------------------
class TrustStore:
    """The mesh CA certificate, its CRL and a local deny list: accept or refuse a peer.

    The CRL file is re-read when its mtime changes (:meth:`reload`); a CRL
    that is not signed by the CA is refused (the old one stays).
    """

    def __init__(self, ca_cert_path: str | os.PathLike, crl_path: str | os.PathLike | None = None,
                 deny: set[str] | None = None) -> None:
        """Load the CA certificate and, if given, the CRL."""
        self.ca_cert_path = str(ca_cert_path)
        self.ca = load_cert(ca_cert_path)
        self.trust_domain = trust_domain_of(self.ca)
        self.crl_path = str(crl_path) if crl_path else None
        self.crl: x509.CertificateRevocationList | None = None
        self._crl_mtime: float | None = None
        self.deny: set[str] = set(deny or ())
        self.reload()

    def reload(self) -> bool:
        """Re-read the CRL if it changed on disk; True when it did."""
        if not self.crl_path:
            return False
        try:
            mtime = os.stat(self.crl_path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._crl_mtime:
            return False
        try:
            crl = x509.load_pem_x509_crl(Path(self.crl_path).read_bytes())
        except ValueError as e:
            raise ConfigError(f"not a PEM CRL ({e})", file=self.crl_path) from None
        if crl.issuer != self.ca.subject or not crl.is_signature_valid(self.ca.public_key()):
            raise ConfigError("CRL is not signed by the mesh CA", file=self.crl_path)
        self.crl, self._crl_mtime = crl, mtime
        return True

    def crl_next_update(self) -> dt.datetime | None:
        """When the current CRL says a newer one is due (None without a CRL)."""
        return self.crl.next_update_utc if self.crl is not None else None

    def crl_stale(self, now: dt.datetime | None = None) -> bool:
        """True when the CRL is past its nextUpdate (re-issue it: ``pydp tunnel ca crl``)."""
        nu = self.crl_next_update()
        return nu is not None and (now or _now()) > nu

    def revoked_serials(self) -> set[int]:
        """Serial numbers the current CRL lists."""
        return {r.serial_number for r in self.crl} if self.crl is not None else set()

    def verify(self, cert: x509.Certificate | bytes, expect: str | None = None,
               now: dt.datetime | None = None) -> str:
        """Return the node id of a valid peer certificate, else raise PeerRefused(reason).

        Checks, in order: signed by the mesh CA; within its validity; not a
        CA; one SPIFFE node ID in this trust domain; equal to ``expect`` if
        given; not on the CRL; not on the deny list.
        """
        if isinstance(cert, (bytes, bytearray)):
            try:
                cert = x509.load_der_x509_certificate(bytes(cert))
            except ValueError:
                raise PeerRefused("peer sent a malformed certificate") from None
        if cert.issuer != self.ca.subject:
            raise PeerRefused(f"unknown CA: certificate issued by '{cert.issuer.rfc4514_string()}'"
                              f", not the mesh CA '{self.ca.subject.rfc4514_string()}'")
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            raise PeerRefused("unknown CA: certificate signature does not verify against the "
                              "mesh CA") from None
        t = now or _now()
        if t > cert.not_valid_after_utc:
            raise PeerRefused(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")
        if t < cert.not_valid_before_utc:
            raise PeerRefused("certificate not valid before "
                              f"{cert.not_valid_before_utc.isoformat()}")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise PeerRefused("a CA certificate cannot be a node")
        except x509.ExtensionNotFound:
            pass
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            if not ku.digital_signature:
                raise PeerRefused("certificate may not sign (key usage lacks "
                                  "digitalSignature)")
        except x509.ExtensionNotFound:
            pass
        if not isinstance(cert.public_key(), ed25519.Ed25519PublicKey):
            raise PeerRefused("node key is not Ed25519")
        node = node_of(cert, self.trust_domain)
        if expect is not None and node != expect:
            want = str(expect)[:64]  # a claim from the wire: shown, never trusted
            raise PeerRefused(f"wrong identity: certificate is {spiffe_id(self.trust_domain, node)}"
                              f", expected spiffe://{self.trust_domain}/node/{want}")
        if self.crl is not None and \
                self.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise PeerRefused(f"certificate of {node} (serial {cert.serial_number:x}) is revoked")
        if node in self.deny:
            raise PeerRefused(f"node {node} is on the deny list")
        return node
