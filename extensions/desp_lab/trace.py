"""Traces of what researchers produce: hash a file or a directory store, register it, find it, verify it, sign it.

    from desp_lab import trace
    t = trace.generate("output/t2m_mean.zarr", inputs=["era5.zarr"])     # BLAKE3 by default
    trace.send(t)                                                       # registered: id, timestamp, origin filled
    trace.search(hash=t["product"]["hash"])                             # every trace of that content
    result = trace.verify("output/t2m_mean.zarr")                       # recompute, compare with the registered one
    result.ok, result.changed, result.missing, result.added

The service is the platform's trace API (the Copernicus traceability API's shape) at `DESP_TRACE_URL` (the service
root, e.g. `http://127.0.0.1:8192`); requests carry the user's DESP access token
(`desp_lab.credentials.access_token()`, asked for at each request). Errors are `desp_lab.errors` classes with the
service's message: 400 DespError, 404 NotFound, an unreachable or failing service ServiceUnavailable.

**Hashes.** `hash_algorithm` is BLAKE3 (default), SHA256 or SHA3 (= SHA3-256); a hash is the lower-case hex digest
of the file's bytes. Files are read in fixed blocks of BLOCK_SIZE bytes into one reused buffer (constant memory,
any file size), with the kernel asked to read ahead (sequential access) so that disk reads overlap hashing.

**Directory stores (Zarr and the like).** A directory's `contents` lists every file below it (hidden ones included,
e.g. `.zarray`; symbolic links to files are followed, links to directories are not entered), each as
`{"path": <path relative to the directory, POSIX separators>, "hash": <hex digest of the file>}`, sorted by the
UTF-8 bytes of the path. Its `size` is the sum of the members' sizes, and its hash (the "global hash") is:

    hash = ALGORITHM( b"".join(path.encode("utf-8") + b"\\0" + hex_digest.encode("ascii") + b"\\n"
                               for path, hex_digest in contents_sorted_by_path) )

with the same algorithm as the members; an empty directory has the hash of zero bytes. It changes when any
member's content, name or presence changes, and does not depend on the order files were written in
(`global_hash(contents, algorithm)` computes it).

**Signatures.** `sign(trace, private_key_pem)` adds `signature = {"algorithm": "ECDSA-P256-SHA256",
"certificate": <PEM public key (or the X.509 certificate given)>, "signature": <base64 of the DER-encoded ECDSA
signature>}`. The signed bytes are `canonical_payload(trace)`: the trace without `signature`, `id`, `timestamp`
and `origin` (the server fills those), i.e. exactly `{"event", "hash_algorithm", "product": {"name", "size",
"hash", "contents": [{"path", "hash"}], "inputs": [{"name", "hash"}]}}` with defaults filled in (event CREATE,
algorithm BLAKE3, empty lists), the algorithm's canonical name and hashes lower-cased, serialised as JSON with
sorted keys, no whitespace (`separators=(",", ":")`), non-ASCII kept, encoded as UTF-8. Other fields are not
signed. So a trace signed before `send` still verifies when read back from the service.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import requests

from .errors import DespError, NotFound, ServiceUnavailable

ALGORITHMS = ("BLAKE3", "SHA256", "SHA3")
ALIASES = {"SHA-256": "SHA256", "SHA3-256": "SHA3", "SHA3_256": "SHA3"}
EVENTS = ("CREATE", "COPY", "DELETE", "OBSOLETE")
BLOCK_SIZE = 1 << 20  # bytes read (and hashed) at a time: fits the CPU cache, few system calls
MAX_BATCH = 50  # traces per PUT, the service's limit
SIGNATURE_ALGORITHM = "ECDSA-P256-SHA256"
DEFAULT_TIMEOUT_SECONDS = 30


# -- hashing (local, no service) ---------------------------------------------------------------------------------


def canonical_algorithm(algorithm: str) -> str:
    """BLAKE3, SHA256 or SHA3 (case-insensitive; SHA-256 and SHA3-256 accepted), else ValueError naming them."""
    name = str(algorithm).strip().upper()
    name = ALIASES.get(name, name)
    if name not in ALGORITHMS:
        raise ValueError(f"Unknown hash algorithm {algorithm!r}: allowed are {', '.join(ALGORITHMS)}")
    return name


def _hasher(algorithm: str):
    name = canonical_algorithm(algorithm)
    if name == "BLAKE3":
        return blake3.blake3()
    return hashlib.sha256() if name == "SHA256" else hashlib.sha3_256()


def hash_file(path, algorithm: str = "BLAKE3") -> tuple[str, int]:
    """(hex digest, bytes read) of the file at `path`, read in BLOCK_SIZE blocks into one reused buffer.

    Memory use is constant (one block). The kernel is told the file is read sequentially, so it reads ahead
    (a larger window) while a block is being hashed: disk reads and hashing overlap without a thread of ours.
    """
    hasher = _hasher(algorithm)
    buffer = memoryview(bytearray(BLOCK_SIZE))
    total = 0
    with open(path, "rb", buffering=0) as stream:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := stream.readinto(buffer):
            hasher.update(buffer[:n])
            total += n
    return hasher.hexdigest(), total


def _path_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def global_hash(contents: Iterable[dict], algorithm: str = "BLAKE3") -> str:
    """A directory's hash from its members `[{"path", "hash"}]` (any order): see the module docstring."""
    hasher = _hasher(algorithm)
    for member in sorted(contents, key=lambda m: _path_key(m["path"])):
        hasher.update(_path_key(member["path"]) + b"\0" + member["hash"].lower().encode("ascii") + b"\n")
    return hasher.hexdigest()


def _member_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) of every file below `root`, sorted by the path's UTF-8 bytes."""
    members = []
    for directory, _, filenames in os.walk(root):  # does not enter symbolic links to directories
        for filename in filenames:
            file = Path(directory, filename)
            if file.is_file():  # regular files and links to them (not sockets, broken links, ...)
                members.append((file.relative_to(root).as_posix(), file))
    members.sort(key=lambda member: _path_key(member[0]))
    return members


def _hash_product(path: Path, algorithm: str) -> tuple[str, int, list[dict]]:
    """(hash, size, contents) of a file or a directory store."""
    if path.is_dir():
        contents, size = [], 0
        for relative, file in _member_files(path):
            digest, member_size = hash_file(file, algorithm)
            contents.append({"path": relative, "hash": digest})
            size += member_size
        return global_hash(contents, algorithm), size, contents
    if path.is_file():
        digest, size = hash_file(path, algorithm)
        return digest, size, []
    raise NotFound(f"No file or directory at {str(path)!r}.")


def _input_entry(value, algorithm: str) -> dict:
    """An input as `{"name", "hash"}`: from such a dict, a trace dict, or the path of a file or directory."""
    if isinstance(value, dict):
        source = value.get("product", value)
        if "name" in source and "hash" in source:
            return {"name": str(source["name"]), "hash": str(source["hash"]).lower()}
        raise ValueError("An input is a {'name', 'hash'} dict, a trace, or a path")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        digest, _, _ = _hash_product(path, algorithm)
        return {"name": _product_name(path), "hash": digest}
    raise ValueError(f"An input is a {{'name', 'hash'}} dict, a trace, or a path, not {type(value).__name__}")


def _product_name(path: Path) -> str:
    return path.name or path.resolve().name


def generate(path, algorithm: str = "BLAKE3", inputs: Iterable = (), event: str = "CREATE",
             name: str | None = None) -> dict:  # fmt: skip
    """The trace of the file or directory store at `path` (not sent; see `send`).

    `algorithm`: BLAKE3, SHA256 or SHA3 (ValueError naming them otherwise). `inputs`: what the product was made
    from, each a path (hashed here), a trace, or `{"name", "hash"}`. `event`: CREATE, COPY, DELETE or OBSOLETE.
    `name`: the product name (default: the file or directory name).
    """
    algorithm = canonical_algorithm(algorithm)
    event = str(event).upper()
    if event not in EVENTS:
        raise ValueError(f"Unknown event {event!r}: allowed are {', '.join(EVENTS)}")
    if isinstance(inputs, (str, os.PathLike, dict)):
        inputs = [inputs]
    path = Path(path)
    digest, size, contents = _hash_product(path, algorithm)
    return {
        "event": event,
        "hash_algorithm": algorithm,
        "product": {"name": name or _product_name(path), "size": size, "hash": digest, "contents": contents,
                    "inputs": [_input_entry(value, algorithm) for value in inputs]},
    }  # fmt: skip


# -- verification (local once the trace is known) ---------------------------------------------------------------


@dataclass
class VerifyResult:
    """What `verify` found. True (as a bool) when the product is unaltered.

    `expected`/`actual`: the registered and the recomputed hash; for a directory, `changed` (same path, other
    content), `missing` (registered, not there now) and `added` (there now, not registered) member paths.
    """

    ok: bool
    expected: str
    actual: str
    name: str
    algorithm: str
    expected_size: int | None = None
    actual_size: int | None = None
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    trace: dict | None = None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"{self.name}: unaltered ({self.algorithm} {self.actual})"
        parts = [f"{self.name}: differs from its trace ({self.algorithm} expected {self.expected}, got {self.actual})"]
        for label, paths in (("changed", self.changed), ("missing", self.missing), ("added", self.added)):
            if paths:
                shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "expected": self.expected, "actual": self.actual, "name": self.name,
                "algorithm": self.algorithm, "expected_size": self.expected_size, "actual_size": self.actual_size,
                "changed": self.changed, "missing": self.missing, "added": self.added}  # fmt: skip


def compare(path, trace: dict) -> VerifyResult:
    """Recompute the hash of `path` with the trace's algorithm and compare (no service involved)."""
    algorithm = canonical_algorithm(trace.get("hash_algorithm", "BLAKE3"))
    product = trace["product"]
    path = Path(path)
    actual, size, contents = _hash_product(path, algorithm)
    expected_members = {m["path"]: m["hash"].lower() for m in product.get("contents") or []}
    actual_members = {m["path"]: m["hash"] for m in contents}
    expected = str(product["hash"]).lower()
    return VerifyResult(
        ok=actual == expected,
        expected=expected,
        actual=actual,
        name=str(product.get("name") or _product_name(path)),
        algorithm=algorithm,
        expected_size=product.get("size"),
        actual_size=size,
        changed=sorted((p for p in expected_members.keys() & actual_members.keys()
                        if expected_members[p] != actual_members[p]), key=_path_key),
        missing=sorted(expected_members.keys() - actual_members.keys(), key=_path_key),
        added=sorted(actual_members.keys() - expected_members.keys(), key=_path_key),
        trace=trace,
    )  # fmt: skip


# -- signatures ----------------------------------------------------------------------------------------------------


def canonical_payload(trace: dict) -> bytes:
    """The bytes a signature covers (see the module docstring)."""
    product = trace["product"]
    payload = {
        "event": str(trace.get("event") or "CREATE").upper(),
        "hash_algorithm": canonical_algorithm(trace.get("hash_algorithm") or "BLAKE3"),
        "product": {
            "name": product["name"], "size": int(product["size"]), "hash": str(product["hash"]).lower(),
            "contents": [{"path": m["path"], "hash": str(m["hash"]).lower()} for m in product.get("contents") or []],
            "inputs": [{"name": x["name"], "hash": str(x["hash"]).lower()} for x in product.get("inputs") or []],
        },
    }  # fmt: skip
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _as_bytes(pem) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else bytes(pem)


def _public_key(certificate):
    """The EC P-256 public key in a PEM public key or X.509 certificate, else ValueError."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _as_bytes(certificate)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise ValueError("The certificate is neither a PEM public key nor a PEM X.509 certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("The signing key must be an ECDSA P-256 (secp256r1) key")
    return key


def sign(trace: dict, private_key_pem, password: bytes | str | None = None, certificate: str | None = None) -> dict:
    """A copy of `trace` with `signature` (ECDSA P-256, SHA-256) made with the PEM private key.

    `certificate`: an X.509 certificate (PEM) to publish with the signature; default the PEM public key.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(password, str):
        password = password.encode()
    key = serialization.load_pem_private_key(_as_bytes(private_key_pem), password=password)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("The signing key must be an ECDSA P-256 (secp256r1) private key")
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    if certificate is not None:
        given = _public_key(certificate).public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        if given.decode("ascii") != public_pem:
            raise ValueError("The certificate does not belong to the private key")
    signature = key.sign(canonical_payload(trace), ec.ECDSA(hashes.SHA256()))
    signed = copy.deepcopy(trace)
    signed["signature"] = {"algorithm": SIGNATURE_ALGORITHM,
                           "certificate": certificate if certificate is not None else public_pem,
                           "signature": base64.b64encode(signature).decode("ascii")}  # fmt: skip
    return signed


def verify_signature(trace: dict, public_key_pem=None) -> bool:
    """True when the trace's signature is valid for its canonical payload and its certificate's key.

    The certificate travels with the trace, so this proves the trace is unaltered since its holder signed it; to
    know *who* signed, pass the expected `public_key_pem` (or certificate): a signature by any other key is False.
    ValueError when the trace has no signature or an unsupported algorithm.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = trace.get("signature")
    if not signature:
        raise ValueError("The trace has no signature")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise ValueError(f"Unsupported signature algorithm {signature.get('algorithm')!r}: "
                         f"only {SIGNATURE_ALGORITHM}")  # fmt: skip
    key = _public_key(signature.get("certificate") or "")
    if public_key_pem is not None:
        spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if _public_key(public_key_pem).public_bytes(*spki) != key.public_bytes(*spki):
            return False
    try:
        raw = base64.b64decode(signature.get("signature") or "", validate=True)
        key.verify(raw, canonical_payload(trace), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# -- the trace service -----------------------------------------------------------------------------------------


class TraceClient:
    """The platform's trace service at `url` (default `DESP_TRACE_URL`, the service root).

    `token`: a string, a zero-argument callable, or None for `desp_lab.credentials.access_token()` at each request.
    """

    def __init__(self, url: str | None = None, token=None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        url = url or os.environ.get("DESP_TRACE_URL")
        if not url:
            raise DespError("No trace service configured: set DESP_TRACE_URL (or pass url=).", field="url")
        url = url.rstrip("/")
        for suffix in ("/api/v1/traces", "/api/v1"):  # tolerate the API prefix: the service root is meant
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        self.url = url
        self.token = token
        self.timeout = timeout
        self._session = requests.Session()

    def _bearer(self) -> str:
        from . import credentials

        try:
            return credentials.bearer_token(self.token)
        except credentials.CredentialsError as error:
            raise DespError(str(error), status=401) from None

    def _request(self, method: str, path: str, **kwargs) -> Any:
        url = f"{self.url}{path}"
        try:
            response = self._session.request(method, url, timeout=self.timeout,
                                             headers={"Authorization": f"Bearer {self._bearer()}"}, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ServiceUnavailable("trace service", url, type(error).__name__) from None
        if response.status_code < 400:
            try:
                return response.json()
            except ValueError:
                raise ServiceUnavailable("trace service", url, "not a JSON answer") from None
        try:
            message = response.json().get("message") or response.reason
        except (ValueError, AttributeError):
            message = response.reason or f"HTTP {response.status_code}"
        if response.status_code == 404:
            raise NotFound(message)
        if response.status_code in (401, 403):
            raise DespError(f"The trace service refused access: {message}", status=response.status_code)
        if response.status_code >= 500:
            raise ServiceUnavailable("trace service", url, f"HTTP {response.status_code}")
        raise DespError(message, status=response.status_code)

    def send(self, traces):
        """Register one trace (returns the stored trace) or a list of them (returns the stored list; sent in
        batches of MAX_BATCH, each stored all or nothing). The service fills `id`, `timestamp` and `origin`."""
        if isinstance(traces, dict):
            return self.send([traces])[0]
        traces = list(traces)
        if not traces:
            return []
        stored = []
        for start in range(0, len(traces), MAX_BATCH):
            stored += self._request("PUT", "/api/v1/traces", json=traces[start : start + MAX_BATCH])
        return stored

    def get(self, trace_id: str) -> dict:
        """The trace with this id (NotFound if none)."""
        return self._request("GET", f"/api/v1/traces/{urllib.parse.quote(str(trace_id), safe='')}")

    def search(self, hash: str | None = None, name: str | None = None) -> list[dict]:
        """Traces whose product hash is `hash` and/or whose product name is `name`, newest first."""
        if hash is None and name is None:
            raise ValueError("search needs hash= or name=")
        if hash is not None:
            found = self._request("GET", f"/api/v1/traces/hash/{urllib.parse.quote(str(hash), safe='')}")
            return [t for t in found if name is None or t["product"]["name"] == name]
        return self._request("GET", f"/api/v1/traces/name/{urllib.parse.quote(str(name), safe='')}")

    def validate(self, name: str, filehash: str) -> dict:
        """The service's answer `{"valid", "trace", "message"}`: is `filehash` the current hash of `name`?"""
        return self._request("GET", f"/api/v1/traces/{urllib.parse.quote(str(name), safe='')}/validate",
                             params={"filehash": filehash})  # fmt: skip

    def current(self, name: str) -> dict:
        """The newest CREATE or COPY trace of the product `name` (NotFound if none)."""
        for found in self.search(name=name):
            if found["event"] in ("CREATE", "COPY"):
                return found
        raise NotFound(f"No trace of a product named {name!r}: send one first, or give trace=.")

    def verify(self, path, trace: dict | str | None = None) -> VerifyResult:
        """Recompute `path`'s hash and compare it with `trace` (a trace dict, a trace id, or by default the
        current trace registered under the product's name)."""
        if trace is None:
            trace = self.current(_product_name(Path(path)))
        elif isinstance(trace, str):
            trace = self.get(trace)
        return compare(path, trace)


def send(traces, url: str | None = None, token=None):
    """`TraceClient(url, token).send(traces)`."""
    return TraceClient(url, token).send(traces)


def get(trace_id: str, url: str | None = None, token=None) -> dict:
    return TraceClient(url, token).get(trace_id)


def search(hash: str | None = None, name: str | None = None, url: str | None = None, token=None) -> list[dict]:
    return TraceClient(url, token).search(hash=hash, name=name)


def validate(name: str, filehash: str, url: str | None = None, token=None) -> dict:
    return TraceClient(url, token).validate(name, filehash)


def verify(path, trace: dict | str | None = None, url: str | None = None, token=None) -> VerifyResult:
    """Is `path` unaltered? With a trace dict no service is asked; otherwise the trace is fetched (by id, or the
    current trace of the product's name)."""
    if isinstance(trace, dict):
        return compare(path, trace)
    return TraceClient(url, token).verify(path, trace)
