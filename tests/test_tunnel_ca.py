"""The mesh CA: node certificates with a SPIFFE SAN, the CRL, and the peer check."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from tunnel_util import Pki

from pydp.errors import AlreadyExists, ConfigError, NotFound, PermissionDenied
from pydp.tunnel.ca import MeshCA, NodeIdentity, PeerRefused, TrustStore, load_key


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_and_issue_write_owner_only_keys(pki):
    d = pki.root / "ca"
    assert _mode(d / "ca.key") == 0o600 and _mode(d) == 0o700
    assert _mode(d / "nodes" / "n1.key") == 0o600
    assert _mode(d / "nodes" / "n1.crt") == 0o644
    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(AlreadyExists, match="already exists"):
        MeshCA.init(d)


def test_node_certificate_carries_its_spiffe_id(pki):
    cert = pki.identity("n1").cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == \
        ["spiffe://mesh.local/node/n1"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.trust().verify(cert, expect="n1") == "n1"
    assert "key=<hidden>" in repr(pki.identity("n1"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_verifies_the_chain_and_the_crl(pki):
    d = pki.root / "ca"
    ok = subprocess.run(["openssl", "verify", "-CAfile", d / "ca.crt", d / "nodes" / "n2.crt"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    pki.ca.revoke("n2")
    bad = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", d / "ca.crt",
                          "-CRLfile", d / "crl.pem", d / "nodes" / "n2.crt"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "revoked" in (bad.stdout + bad.stderr)


def test_revoke_lists_the_serial_in_a_signed_crl(pki):
    trust = pki.trust()
    cert = pki.identity("n2").cert
    (serial,) = pki.ca.revoke("n2")
    assert int(serial, 16) == cert.serial_number
    assert trust.reload() is True
    assert cert.serial_number in trust.revoked_serials()
    with pytest.raises(PeerRefused, match="revoked"):
        trust.verify(cert, expect="n2")
    assert pki.trust().verify(pki.identity("n1").cert) == "n1"  # others unaffected
    crl = x509.load_pem_x509_crl((pki.root / "ca" / "crl.pem").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert pki.ca.revoke("n2") == []  # already revoked
    with pytest.raises(NotFound):
        pki.ca.revoke("n9")


def test_rotation_then_revoking_the_old_serial_keeps_the_new(pki):
    old = pki.identity("n1").cert
    pki.ca.issue("n1")
    new = pki.identity("n1").cert
    assert new.serial_number != old.serial_number
    pki.ca.revoke(serial=f"{old.serial_number:x}")
    trust = pki.trust()
    assert trust.verify(new, expect="n1") == "n1"
    with pytest.raises(PeerRefused, match="revoked"):
        trust.verify(old, expect="n1")


def test_refuses_unknown_ca(pki, tmp_path):
    other = Pki(tmp_path / "other", nodes=("n1",))
    with pytest.raises(PeerRefused, match="unknown CA"):
        pki.trust().verify(other.identity("n1").cert)


def test_refuses_same_name_other_ca_key(pki, tmp_path):
    # an impostor CA with the very same subject name: the signature gives it away
    imp = MeshCA.init(tmp_path / "imp")
    imp.cert = pki.ca.cert  # issue under the real CA's name, signed by the impostor's key
    crt, _ = imp.issue("n1", tmp_path / "impnodes")
    with pytest.raises(PeerRefused, match="unknown CA: certificate signature"):
        pki.trust().verify(x509.load_pem_x509_certificate(crt.read_bytes()))


def test_refuses_expired_and_not_yet_valid(pki, tmp_path):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    crt, key = pki.ca.issue("n3", tmp_path / "old", days=1, not_before=past)
    with pytest.raises(PeerRefused, match="expired"):
        pki.trust().verify(x509.load_pem_x509_certificate(crt.read_bytes()))
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    crt, key = pki.ca.issue("n3", tmp_path / "new", days=1, not_before=future)
    with pytest.raises(PeerRefused, match="not valid before"):
        pki.trust().verify(x509.load_pem_x509_certificate(crt.read_bytes()))


def test_refuses_wrong_identity_and_foreign_trust_domain(pki):
    with pytest.raises(PeerRefused, match="wrong identity: certificate is "
                       "spiffe://mesh.local/node/n1, expected spiffe://mesh.local/node/n2"):
        pki.trust().verify(pki.identity("n1").cert, expect="n2")
    # signed by the mesh CA, but naming another trust domain
    key = ed25519.Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(pki.ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://evil.example/node/n1")]), critical=True)
            .sign(pki.ca._key, None))
    with pytest.raises(PeerRefused, match="not a node of trust domain 'mesh.local'"):
        pki.trust().verify(cert)


def test_deny_list(pki):
    t = TrustStore(pki.root / "ca" / "ca.crt", None, deny={"n3"})
    with pytest.raises(PeerRefused, match="n3 is on the deny list"):
        t.verify(pki.identity("n3").cert)


def test_crl_not_signed_by_the_ca_is_refused(pki, tmp_path):
    Pki(tmp_path / "other", nodes=())  # a valid CRL, of another CA
    shutil.copy(tmp_path / "other" / "ca" / "crl.pem", tmp_path / "forged.pem")
    with pytest.raises(ConfigError, match="not signed by the mesh CA"):
        TrustStore(pki.root / "ca" / "ca.crt", tmp_path / "forged.pem")


def test_key_file_readable_by_others_is_refused(pki):
    _, key = pki.paths("n1")
    os.chmod(key, 0o644)
    with pytest.raises(PermissionDenied, match="chmod 600"):
        load_key(key)


def test_identity_key_must_match_certificate(pki):
    crt1, _ = pki.paths("n1")
    _, key2 = pki.paths("n2")
    with pytest.raises(ConfigError, match="is not the key of"):
        NodeIdentity.load(crt1, key2)
    raw = load_key(key2).private_bytes(serialization.Encoding.Raw,
                                       serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())
    assert raw not in repr(pki.identity("n2")).encode()


def test_crl_refresh_and_staleness(pki):
    trust = pki.trust()
    assert not trust.crl_stale()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=8)
    assert trust.crl_stale(now=later)  # issued for 7 days
    pki.ca.revoke("n3")
    pki.ca.refresh_crl(days=30)
    assert trust.reload() and not trust.crl_stale(now=later)
    assert pki.identity("n3").cert.serial_number in trust.revoked_serials()  # kept
