"""JWTs on the API: what verifies, and every forgery, misuse and stale token that must be a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts.models import User
from audit.models import AuditEvent
from core.actors import Actor
from credentials import keyring, tokens
from credentials.authentication import CredentialRefused, authenticate_credential
from organizations import services as tenant_services
from tests.credentials.helpers import bearer, error_code, token_pair

ORGANIZATION = "/api/v1/organization/"


@pytest.fixture(autouse=True)
def _fresh_keyring():
    keyring.forget()
    yield
    keyring.forget()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(org, user, **changes) -> dict:
    now = int(time.time())
    tenant_id = str(org.tenant.public_id)
    payload = {
        "token_type": "access",
        "exp": now + 600,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "sub": str(user.pk),
        "tenant": tenant_id,
        "aud": tenant_id,
        "iss": tokens.issuer_for(org.tenant),
        "role": user.role,
        "permissions": ["org:read"],
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def sign(payload: dict, **headers) -> str:
    kid, private_key = keyring.signing_key()
    return jwt.encode(payload, private_key, algorithm="RS256", headers={"kid": kid, **headers})


def unsigned(payload: dict) -> str:
    kid, _ = keyring.signing_key()
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def hs256_with_public_key(payload: dict) -> str:
    kid, private_key = keyring.signing_key()
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def with_foreign_key(payload: dict, **headers) -> str:
    """Signed by a key the attacker made, naming it in `jwk`/`jku` or under a made-up kid."""
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(payload, attacker_key, algorithm="RS256", headers=headers)


def tampered(payload: dict) -> str:
    token = sign(payload)
    header, body, signature = token.split(".")
    changed = {**payload, "role": "owner", "permissions": ["org:read", "members:manage"]}
    return f"{header}.{_b64(json.dumps(changed).encode())}.{signature}"


def test_a_valid_access_token_is_accepted(org, client_for):
    pair = token_pair(org, org.viewer)
    response = client_for(org).get(ORGANIZATION, **bearer(pair.access))
    assert response.status_code == 200
    assert response.json()["id"] == str(org.tenant.public_id)


def _attacker_jwk() -> dict:
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.algorithms.RSAAlgorithm.to_jwk(attacker_key.public_key(), as_dict=True)


FORGERIES = {
    "alg none": lambda org, user: unsigned(claims_for(org, user)),
    "HS256 signed with the public key": lambda org, user: hs256_with_public_key(
        claims_for(org, user)
    ),
    "unknown kid": lambda org, user: with_foreign_key(claims_for(org, user), kid="attacker"),
    "jwk header": lambda org, user: with_foreign_key(
        claims_for(org, user), jwk=_attacker_jwk(), kid="attacker"
    ),
    "jku header with our kid": lambda org, user: sign(
        claims_for(org, user), jku="http://10.255.255.1/jwks.json"
    ),
    "tampered payload": lambda org, user: tampered(claims_for(org, user)),
    "wrong aud": lambda org, user: sign(claims_for(org, user, aud=str(uuid.uuid4()))),
    "missing aud": lambda org, user: sign(claims_for(org, user, aud=None)),
    "wrong tenant claim": lambda org, user: sign(claims_for(org, user, tenant=str(uuid.uuid4()))),
    "wrong iss": lambda org, user: sign(claims_for(org, user, iss="https://evil.example")),
    "missing iss": lambda org, user: sign(claims_for(org, user, iss=None)),
    "expired": lambda org, user: sign(
        claims_for(org, user, exp=int(time.time()) - 1, iat=int(time.time()) - 901)
    ),
    "missing exp": lambda org, user: sign(claims_for(org, user, exp=None)),
    "not yet valid": lambda org, user: sign(claims_for(org, user, nbf=int(time.time()) + 300)),
    "refresh token used as access token": lambda org, user: token_pair(org, user).refresh,
    "missing jti": lambda org, user: sign(claims_for(org, user, jti=None)),
    "unknown user": lambda org, user: sign(claims_for(org, user, sub="999999")),
    "garbage": lambda org, user: "not.a.jwt",
}
EXPECTED_CODES = {
    "expired": "token_expired",
    "not yet valid": "token_not_yet_valid",
    "refresh token used as access token": "token_wrong_type",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_or_misused_tokens_are_401_without_any_outbound_request(
    org, client_for, in_tenant, monkeypatch, name
):
    token = FORGERIES[name](org, org.viewer)
    connections = []
    real_connect = socket.socket.connect

    def record_connect(self, address):
        connections.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", record_connect)
    monkeypatch.setattr(jwt.PyJWKClient, "fetch_data", lambda self: pytest.fail("JWKS fetched"))

    response = client_for(org).get(ORGANIZATION, **bearer(token))

    assert response.status_code == 401
    assert error_code(response) == EXPECTED_CODES.get(name, "token_invalid")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert all(str(address[0]) in {"127.0.0.1", "::1", "localhost"} for address in connections)
    with in_tenant(org):
        (event,) = AuditEvent.objects.filter(action="auth.failed")
    expected = {"scheme": "jwt", "code": EXPECTED_CODES.get(name, "token_invalid"), "count": 1}
    assert {key: event.details[key] for key in expected} == expected
    assert token not in json.dumps(event.details)


def test_a_token_from_another_organization_is_401_on_this_host(org, other_org, client_for):
    pair = token_pair(org, org.owner)
    response = client_for(other_org).get(ORGANIZATION, **bearer(pair.access))
    assert response.status_code == 401
    assert error_code(response) == "token_invalid"


def test_a_deactivated_users_token_is_refused_at_the_next_request(org, client_for, in_tenant):
    pair = token_pair(org, org.member)
    client = client_for(org)
    assert client.get(ORGANIZATION, **bearer(pair.access)).status_code == 200
    with in_tenant(org):
        User.objects.filter(pk=org.member.pk).update(is_active=False)
    response = client.get(ORGANIZATION, **bearer(pair.access))
    assert response.status_code == 401
    assert error_code(response) == "user_inactive"


def test_a_demoted_users_token_loses_the_permissions_at_once(org, client_for, in_tenant):
    pair = token_pair(org, org.admin)
    client = client_for(org)
    assert client.get("/api/v1/api-keys/", **bearer(pair.access)).status_code == 200
    with in_tenant(org):
        User.objects.filter(pk=org.admin.pk).update(role="viewer")
    response = client.get("/api/v1/api-keys/", **bearer(pair.access))
    assert response.status_code == 403
    assert error_code(response) == "permission_denied"


def test_a_suspended_organizations_tokens_are_refused(org, client_for):
    pair = token_pair(org, org.owner)
    tenant_services.tenant_suspend(actor=Actor.system("tests"), tenant=org.tenant, reason="tests")
    # Over HTTP the routing middleware refuses the whole organization before any credential.
    response = client_for(org).get(ORGANIZATION, **bearer(pair.access))
    assert response.status_code == 403
    assert error_code(response) == "organization_suspended"


def test_the_verifier_itself_refuses_a_suspended_organization(org, in_tenant, monkeypatch):
    """What the WebSocket gateway relies on: the verifier checks the organization, too."""
    pair = token_pair(org, org.owner)
    monkeypatch.setattr(org.tenant, "status", "suspended")
    with in_tenant(org), pytest.raises(CredentialRefused) as error:
        authenticate_credential(pair.access, org.tenant)
    assert error.value.error_code == "organization_suspended"


def test_the_algorithm_is_pinned_in_code(settings, org):
    settings.SIMPLE_JWT = {"ALGORITHM": "HS256"}
    backend = tokens.KeyringTokenBackend(org.tenant)
    assert backend.algorithm == "RS256"
    token = sign(claims_for(org, org.viewer))
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
