"""Encrypted tunnels between mesh nodes: identities, handshake, SA keys.

- :mod:`.ca`: the mesh CA (node certificates with a SPIFFE URI SAN, a CRL)
  and the verifier every node runs on a peer's certificate.
- :mod:`.keys`: key material that can be wiped (bytearrays zeroed on removal).
- :mod:`.handshake`: the authenticated X25519 + HKDF handshake that derives
  the SAs of both directions.
- :mod:`.manager`: a node's tunnels over UDP on the control path: install,
  rekey with overlap, certificate rotation, revocation.
- :mod:`.service`: ``tunnel.*`` commands on the control socket.
"""

from .ca import MeshCA, NodeIdentity, PeerRefused, TrustStore, spiffe_id

__all__ = ["MeshCA", "NodeIdentity", "PeerRefused", "TrustStore", "spiffe_id"]
