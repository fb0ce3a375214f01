"""The zero-trust policy model, its ACL compiler, diffs, Kubernetes import and drawings.

- :mod:`.model`: identities (labels -> addresses), rules, default deny; YAML or Python.
- :mod:`.compile`: :func:`compile_policy` to :class:`pydp.acl.AclRule` lists, and the
  reference evaluator :func:`expected_verdict`.
- :mod:`.diff`: who can reach whom, and what changes between two policies.
- :mod:`.k8s`: Kubernetes NetworkPolicy objects plus a pod inventory -> Policy.
- :mod:`.graph`: Graphviz drawings.

Importing this package installs :func:`load_compiled` as the compiler behind a
policy stage's ``policy: FILE`` (:func:`pydp.acl.set_policy_loader`).
"""

from __future__ import annotations

from .. import acl
from .compile import compile_policy, compile_policy_array, expected_verdict, explain
from .diff import PolicyDiff, diff, reach
from .model import Identity, Policy, PortSpec, Rule, Selector


def load_compiled(path: str) -> acl.CompiledPolicy:
    """Load, validate and compile a policy file for a policy stage."""
    pol = Policy.load(path)
    rules, n_ids = compile_policy_array(pol)
    return acl.CompiledPolicy(rules, n_ids, pol.default == "allow")


acl.set_policy_loader(load_compiled)

__all__ = ["Identity", "Policy", "PolicyDiff", "PortSpec", "Rule", "Selector", "compile_policy",
           "compile_policy_array", "diff", "expected_verdict", "explain", "load_compiled", "reach"]
