"""Log lines never carry credentials, whatever a log call is handed."""

from __future__ import annotations

import io
import json

import structlog

from authz import observability
from authz.testing import LocalIssuer


def test_credentials_are_redacted_everywhere(
    logs: io.StringIO, issuer: LocalIssuer
) -> None:
    """Sensitive keys, JWTs inside text and tracebacks are all redacted."""
    token = issuer.mint(audience="a")
    log = structlog.get_logger("test")

    log.info("call", authorization=f"Bearer {token}", cookie="session=abc123")
    log.info("text", note=f"got {token} from client", headers={"Authorization": "x"})
    log.info("basic", note="Authorization: Basic dXNlcjpwYXNz")
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        log.exception("failed")

    text = logs.getvalue()
    assert token not in text
    assert token.split(".")[1] not in text
    assert "abc123" not in text
    assert "dXNlcjpwYXNz" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["authorization"] == observability.REDACTED
    assert lines[1]["headers"] == {"Authorization": observability.REDACTED}
    assert "ValueError" in lines[3]["exception"]


def test_hostnames_are_not_mistaken_for_tokens(logs: io.StringIO) -> None:
    """Dotted names such as service hosts stay readable."""
    structlog.get_logger("test").info(
        "x", host="echo-server.echo-server.svc.cluster.local"
    )

    assert (
        json.loads(logs.getvalue())["host"]
        == "echo-server.echo-server.svc.cluster.local"
    )
