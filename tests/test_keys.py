"""Key sources against a real HTTPS key server: discovery, rotation, outages."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import pytest

from authz import policy as policy_module
from authz.decision import decide
from authz.keys.sources import KeySourceError
from authz.keys.store import IssuerKeys, KeyStore
from authz.policy import Policy, load
from authz.reasons import Reason
from authz.request import HttpRequest
from authz.testing import LocalIssuer

from keyserver import KeyServer

AUDIENCE = "echo-server.echo-server.svc.cluster.local"


def _policy(tmp_path: Path, issuers: list[dict[str, Any]]) -> Policy:
    lines = ["issuers:"]
    for issuer in issuers:
        first, *rest = issuer.items()
        lines.append(f"  - {first[0]}: {first[1]}")
        lines += [f"    {key}: {_yaml(value)}" for key, value in rest]
    lines += [
        "routes:",
        "  - name: all",
        f"    audiences: [{AUDIENCE}]",
        "    service_accounts: [default/*]",
    ]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load(path)


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _served(server: KeyServer, *issuers: LocalIssuer) -> None:
    server.jwks = {"keys": [i.public_jwk() for i in issuers]}


def _discovery(server: KeyServer, issuer: str, jwks_uri: str | None = None) -> None:
    server.discovery = {"issuer": issuer, "jwks_uri": jwks_uri or f"{server.url}/jwks"}


def _decide(store: KeyStore, policy: Policy, token: str) -> Reason:
    request = HttpRequest("GET", AUDIENCE, "/", (("authorization", f"Bearer {token}"),))
    return decide(request, policy, store.lookup, time.time()).reason


def _store(policy: Policy) -> KeyStore:
    store = KeyStore(policy)
    asyncio.run(store.load_all())
    return store


def test_discovery_then_fetch(tmp_path: Path, server: KeyServer) -> None:
    """Without jwks_uri, keys are found through the discovery document."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url)
    policy = _policy(tmp_path, [{"issuer": server.url, "ca_file": server.ca_file}])

    store = _store(policy)

    assert server.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_discovery_url_points_elsewhere(tmp_path: Path, server: KeyServer) -> None:
    """discovery_url reads the document from another address than the issuer."""
    issuer = "https://kubernetes.default.svc.cluster.local"
    signer = LocalIssuer(issuer=issuer)
    _served(server, signer)
    _discovery(server, issuer)
    policy = _policy(
        tmp_path,
        [{"issuer": issuer, "discovery_url": server.url, "ca_file": server.ca_file}],
    )

    store = _store(policy)

    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_explicit_jwks_uri_beats_discovery(tmp_path: Path, server: KeyServer) -> None:
    """An explicit jwks_uri is used even when discovery advertises a dead one."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url, jwks_uri="https://127.0.0.1:1/unreachable")
    policy = _policy(
        tmp_path,
        [
            {
                "issuer": server.url,
                "jwks_uri": f"{server.url}/jwks",
                "ca_file": server.ca_file,
            }
        ],
    )

    store = _store(policy)

    assert server.hits["/.well-known/openid-configuration"] == 0
    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_discovery_naming_another_issuer_is_refused(
    tmp_path: Path, server: KeyServer
) -> None:
    """A discovery document for another issuer yields no keys at all."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url + "/other")
    policy = _policy(tmp_path, [{"issuer": server.url, "ca_file": server.ca_file}])

    store = _store(policy)

    assert server.hits["/jwks"] == 0
    assert store.lookup(server.url) is None
    reason = _decide(store, policy, signer.mint(audience=AUDIENCE))
    assert reason is Reason.KEYS_UNAVAILABLE


def test_untrusted_certificate_is_refused(tmp_path: Path, server: KeyServer) -> None:
    """TLS verification is always on: a server outside the CA gets no trust."""
    _served(server, LocalIssuer(issuer=server.url))
    policy = _policy(
        tmp_path, [{"issuer": server.url, "jwks_uri": f"{server.url}/jwks"}]
    )

    store = _store(policy)

    assert store.lookup(server.url) is None


def test_bearer_token_file_is_sent_and_reread(
    tmp_path: Path, server: KeyServer
) -> None:
    """Endpoints closed to anonymous callers open with the mounted token."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n", encoding="utf-8")
    server.required_token = "first-token"
    config = {
        "issuer": server.url,
        "jwks_uri": f"{server.url}/jwks",
        "ca_file": server.ca_file,
    }
    anonymous = _store(_policy(tmp_path, [config]))
    assert anonymous.lookup(server.url) is None

    policy = _policy(tmp_path, [{**config, "bearer_token_file": token_file}])
    store = _store(policy)
    assert store.lookup(server.url) is not None

    token_file.write_text("rotated-token\n", encoding="utf-8")
    server.required_token = "rotated-token"
    asyncio.run(store.issuers[server.url].fetch())

    assert server.tokens_seen[-2:] == ["first-token", "rotated-token"]


def test_in_cluster_uses_mounted_credentials(tmp_path: Path) -> None:
    """in_cluster fills in the pod's CA, token and the API server address."""
    policy = _policy(
        tmp_path,
        [
            {
                "issuer": "https://kubernetes.default.svc.cluster.local",
                "in_cluster": True,
            }
        ],
    )

    issuer = policy.issuers[0]
    secrets = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    assert issuer.effective_ca_file == secrets / "ca.crt"
    assert issuer.effective_bearer_token_file == secrets / "token"
    assert issuer.discovery_document_url == (
        "https://kubernetes.default.svc/.well-known/openid-configuration"
    )


def _issuer_keys(tmp_path: Path, server: KeyServer, **extra: Any) -> IssuerKeys:
    config = {"issuer": server.url, "jwks_uri": f"{server.url}/jwks", **extra}
    policy = _policy(tmp_path, [{**config, "ca_file": server.ca_file}])
    return KeyStore(policy).issuers[server.url]


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"keys":' * 50_000, b"\xff\xfe", b"[]", b'{"keys": "x"}'],
    ids=["nested-arrays", "nested-objects", "not-utf8", "array", "keys-not-list"],
)
def test_hostile_key_document_is_a_fetch_failure(
    tmp_path: Path, server: KeyServer, body: bytes
) -> None:
    """Whatever the key server sends, a fetch fails as a KeySourceError."""
    keys = _issuer_keys(tmp_path, server)
    server.raw_jwks = body

    with pytest.raises(KeySourceError):
        asyncio.run(keys.fetch())
    assert keys.keyset is None
    assert keys.attempted


def _broken(issuer: LocalIssuer, **changes: str) -> dict[str, Any]:
    return {**issuer.public_jwk(), **changes}


def test_keys_that_cannot_be_built_are_skipped(
    tmp_path: Path, server: KeyServer
) -> None:
    """A JWK with bad material is dropped at load; its kid is simply unknown."""
    good = LocalIssuer(issuer=server.url)
    rsa_bad = LocalIssuer(issuer=server.url)
    ec_bad = LocalIssuer(issuer=server.url, algorithm="ES256")
    p384 = LocalIssuer(issuer=server.url, algorithm="ES384").public_jwk()
    server.jwks = {
        "keys": [
            good.public_jwk(),
            _broken(rsa_bad, e="!!!"),
            _broken(rsa_bad, kid="even-exponent", e="AAAC"),
            _broken(ec_bad, x=ec_bad.public_jwk()["y"]),
            {**p384, "kid": "p384-as-p256", "crv": "P-256", "alg": "ES256"},
            {**good.public_jwk(), "kid": "wrong-alg", "alg": "RSA-OAEP"},
        ]
    }
    policy = _policy(
        tmp_path,
        [
            {
                "issuer": server.url,
                "jwks_uri": f"{server.url}/jwks",
                "ca_file": server.ca_file,
                "algorithms": ["RS256", "ES256"],
            }
        ],
    )
    store = _store(policy)

    keyset = store.lookup(server.url)
    assert keyset is not None
    assert keyset.kids == {good.kid}
    for signer in (rsa_bad, ec_bad):
        assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is (
            Reason.KEY_UNKNOWN
        )
    assert _decide(store, policy, good.mint(audience=AUDIENCE)) is Reason.ALLOWED


@pytest.mark.parametrize(
    "jwks_uri",
    ["https://127.0.0.1:99999/jwks", "https://[::1/jwks", "http://plain/jwks", 42],
)
def test_discovery_advertising_an_unusable_jwks_uri(
    tmp_path: Path, server: KeyServer, jwks_uri: object
) -> None:
    """A discovery document's jwks_uri is held to the policy's own URL rules."""
    server.discovery = {"issuer": server.url, "jwks_uri": jwks_uri}
    policy = _policy(tmp_path, [{"issuer": server.url, "ca_file": server.ca_file}])
    keys = KeyStore(policy).issuers[server.url]

    with pytest.raises(KeySourceError, match="jwks_uri"):
        asyncio.run(keys.fetch())


@pytest.mark.parametrize(
    "content",
    ["tok\u00e9n", "first-line\nsecond SECRETPART", "two words", ""],
    ids=["non-ascii", "two-lines", "space", "empty"],
)
def test_bearer_token_file_a_header_cannot_carry(
    tmp_path: Path, server: KeyServer, logs: io.StringIO, content: str
) -> None:
    """A token file that is not one printable word fails the fetch, unquoted."""
    token_file = tmp_path / "token"
    token_file.write_text(content, encoding="utf-8")
    keys = _issuer_keys(tmp_path, server, bearer_token_file=token_file)

    with pytest.raises(KeySourceError, match="not one printable word") as failed:
        asyncio.run(keys.fetch())

    assert server.hits["/jwks"] == 0
    assert "SECRETPART" not in str(failed.value) + logs.getvalue()


def test_credentials_stay_with_the_discovery_origin(
    tmp_path: Path, server: KeyServer, ca: Any
) -> None:
    """A key URL on another origin is fetched without the pod's token."""
    elsewhere = KeyServer(ca=ca[0], ca_file=ca[1]).start()
    try:
        signer = LocalIssuer(issuer=server.url)
        _served(elsewhere, signer)
        _discovery(server, server.url, f"{elsewhere.url}/jwks")
        token_file = tmp_path / "token"
        token_file.write_text("pod-token\n", encoding="utf-8")
        config = {
            "issuer": server.url,
            "ca_file": server.ca_file,
            "bearer_token_file": token_file,
        }
        keys = KeyStore(_policy(tmp_path, [config])).issuers[server.url]

        asyncio.run(keys.fetch())
        elsewhere.required_token = "pod-token"
        with pytest.raises(KeySourceError, match="set jwks_uri"):
            asyncio.run(keys.fetch())
    finally:
        elsewhere.stop()

    assert keys.keyset is not None
    assert server.tokens_seen == ["pod-token", "pod-token"]
    assert elsewhere.tokens_seen == [None, None]


def test_in_cluster_reads_keys_from_the_api_server_it_can_reach(
    tmp_path: Path, server: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The advertised key URL may be unreachable; /openid/v1/jwks is not."""
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text("pod-token", encoding="utf-8")
    (secrets / "ca.crt").write_bytes(server.ca_file.read_bytes())
    monkeypatch.setattr(policy_module, "IN_CLUSTER_API", server.url)
    monkeypatch.setattr(policy_module, "IN_CLUSTER_SECRETS", secrets)
    issuer = "https://kubernetes.default.svc.cluster.local"
    _discovery(server, issuer, "https://10.255.255.1:6443/openid/v1/jwks")
    _served(server, LocalIssuer(issuer=issuer))
    server.required_token = "pod-token"
    policy = _policy(tmp_path, [{"issuer": issuer, "in_cluster": True}])

    store = _store(policy)

    assert store.lookup(issuer) is not None
    assert server.hits["/openid/v1/jwks"] == 1
