"""The realm's RS256 signing key and JWT signing / verification, all through joserfc."""

import base64
import hashlib
import json
import logging
import os

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

log = logging.getLogger(__name__)

KEY_FILE = "signing-key.json"
ALGORITHM = "RS256"


class InvalidToken(Exception):
    """A token that is malformed, wrongly signed, of the wrong type or issuer, or expired."""


def load_or_create_signing_key(data_dir):
    """The private JWK in `{data_dir}/signing-key.json`, created (mode 0600) on first start."""
    path = os.path.join(data_dir, KEY_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            return RSAKey.import_key(json.load(file))
    except FileNotFoundError:
        pass
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # another process created it meanwhile: use theirs
        return load_or_create_signing_key(data_dir)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(key.as_dict(private=True), file)
    log.info("created signing key %s in %s", key.kid, path)
    return key


def half_hash(value):
    """`at_hash`: base64url of the left half of SHA-256 of the access token."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


class Signer:
    """Signs claims as RS256 JWTs with a `kid`, and verifies tokens this realm issued."""

    def __init__(self, key, issuer):
        self.key = key
        self.issuer = issuer
        self._key_set = KeySet([key])

    @property
    def kid(self):
        return self.key.kid

    def jwks(self):
        """The public JSON Web Key Set served at `/certs`."""
        return {"keys": [self.key.as_dict(private=False)]}

    def public_key_der_base64(self):
        """The public key as Keycloak's realm endpoint shows it (base64 SubjectPublicKeyInfo)."""
        return base64.b64encode(self.key.as_der(private=False)).decode("ascii")

    def sign(self, claims):
        """A compact JWS of `claims`."""
        return jwt.encode({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}, claims, self.key, algorithms=[ALGORITHM])

    def verify(self, token, typ, now, check_expiry=True):
        """The claims of a token this realm signed, of type `typ` ("Bearer", "ID", "Refresh").

        Raises InvalidToken with a short reason (safe to show; never contains the token).
        """
        if not token or not isinstance(token, str):
            raise InvalidToken("Token not provided")
        try:
            claims = jwt.decode(token, self._key_set, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError) as error:
            raise InvalidToken("Token verification failed") from error
        if claims.get("iss") != self.issuer:
            raise InvalidToken("Invalid token issuer")
        if claims.get("typ") != typ:
            raise InvalidToken("Invalid token type")
        if check_expiry and not (isinstance(claims.get("exp"), int) and claims["exp"] > now):
            raise InvalidToken("Token is not active")
        return claims
