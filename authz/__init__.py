"""Envoy ext_authz server that verifies Kubernetes service-account tokens."""

from authz.decision import Decision, KeyLookup, decide
from authz.policy import Policy, PolicyError, load
from authz.reasons import OUTCOMES, Outcome, Reason
from authz.request import HttpRequest
from authz.tokens import Identity

__all__ = [
    "OUTCOMES",
    "Decision",
    "HttpRequest",
    "Identity",
    "KeyLookup",
    "Outcome",
    "Policy",
    "PolicyError",
    "Reason",
    "decide",
    "load",
]
