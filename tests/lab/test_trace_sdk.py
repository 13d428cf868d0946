"""desp_lab.trace: hashes equal independent computations, directory global hashes, the service round trip,
verification that names what changed, and ECDSA signatures."""

import hashlib
import os
import tracemalloc
import uuid
from pathlib import Path

import blake3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from desp_lab import trace
from desp_lab.errors import DespError, NotFound, ServiceUnavailable
from tests.support import free_port

INDEPENDENT = {
    "BLAKE3": lambda data: blake3.blake3(data).hexdigest(),
    "SHA256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA3": lambda data: hashlib.sha3_256(data).hexdigest(),
}
MiB = 1 << 20


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def client(sandbox_traces):
    return trace.TraceClient(sandbox_traces.url, token=lambda: sandbox_traces.token_for("researcher"))


def private_key_pem(curve=None) -> bytes:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def public_key_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- hashes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["BLAKE3", "SHA256", "SHA3"])
@pytest.mark.parametrize("size", [0, 1, MiB, MiB + 1, 3 * MiB - 7])
def test_file_hash_equals_an_independent_computation(tmp_path, algorithm, size):
    data = os.urandom(size)
    path = write(tmp_path / "product.bin", data)
    generated = trace.generate(path, algorithm=algorithm)
    assert generated["hash_algorithm"] == algorithm
    assert generated["event"] == "CREATE"
    product = generated["product"]
    assert product == {"name": "product.bin", "size": size, "hash": INDEPENDENT[algorithm](data),
                       "contents": [], "inputs": []}  # fmt: skip


@pytest.mark.parametrize("algorithm", ["BLAKE3", "SHA256"])
def test_hash_of_a_file_over_64_mib_equals_an_independent_computation(tmp_path, algorithm):
    """A sparse 65 MiB + 123 B file with random patches (at the start, across block boundaries, at the end),
    hashed with a small bounded peak of Python memory."""
    size = 65 * MiB + 123
    path = tmp_path / "big.bin"
    try:
        with open(path, "wb") as stream:
            stream.truncate(size)
            for offset in (0, MiB - 100, 17 * MiB + 5, 64 * MiB - 1, size - 1000):
                stream.seek(offset)
                stream.write(os.urandom(1000))
        tracemalloc.start()
        try:
            generated = trace.generate(path, algorithm=algorithm)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * MiB  # one 1 MiB block buffer, not the file: constant memory
        data = path.read_bytes()
        assert len(data) == size
        assert generated["product"]["size"] == size
        assert generated["product"]["hash"] == INDEPENDENT[algorithm](data)
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("algorithm", ["MD5", "sha1", "", "BLAKE2"])
def test_unknown_algorithm_is_a_value_error_naming_the_allowed_ones(tmp_path, algorithm):
    path = write(tmp_path / "f", b"x")
    with pytest.raises(ValueError) as error:
        trace.generate(path, algorithm=algorithm)
    for allowed in ("BLAKE3", "SHA256", "SHA3"):
        assert allowed in str(error.value)


def test_algorithm_names_are_case_insensitive_with_aliases(tmp_path):
    path = write(tmp_path / "f", b"abc")
    assert trace.generate(path, "sha-256")["hash_algorithm"] == "SHA256"
    assert trace.generate(path, "Sha3-256")["product"]["hash"] == hashlib.sha3_256(b"abc").hexdigest()


def test_unknown_event_and_missing_path(tmp_path):
    path = write(tmp_path / "f", b"x")
    with pytest.raises(ValueError, match="CREATE, COPY, DELETE, OBSOLETE"):
        trace.generate(path, event="MOVE")
    with pytest.raises(NotFound):
        trace.generate(tmp_path / "nothing-here")


def test_inputs_from_paths_traces_and_dicts(tmp_path):
    source = write(tmp_path / "era5.grib", b"source data")
    other = trace.generate(write(tmp_path / "other.nc", b"other"))
    product = write(tmp_path / "mean.nc", b"result")
    generated = trace.generate(product, inputs=[source, other, {"name": "x", "hash": "AB" * 32}], event="COPY",
                               name="t2m-mean.nc")  # fmt: skip
    assert generated["event"] == "COPY"
    assert generated["product"]["name"] == "t2m-mean.nc"
    assert generated["product"]["inputs"] == [
        {"name": "era5.grib", "hash": blake3.blake3(b"source data").hexdigest()},
        {"name": "other.nc", "hash": other["product"]["hash"]},
        {"name": "x", "hash": "ab" * 32},
    ]


# -- directory stores --------------------------------------------------------------------------------------------

STORE = {
    ".zgroup": b'{"zarr_format": 2}',
    "t2m/.zarray": b'{"chunks": [2, 2]}',
    "t2m/0.0": os.urandom(5000),
    "t2m/0.1": os.urandom(3000),
    "t2m/1.0": b"",
    "latitude/0": os.urandom(100),
    "a b/ü.bin": b"unicode",
}


def make_store(root: Path, members: dict, order=None) -> Path:
    for relative in order or members:
        write(root / relative, members[relative])
    return root


def test_directory_contents_and_global_hash_follow_the_documented_definition(tmp_path):
    store = make_store(tmp_path / "t2m.zarr", STORE)
    generated = trace.generate(store)
    product = generated["product"]
    paths = sorted(STORE, key=lambda p: p.encode("utf-8"))
    assert [m["path"] for m in product["contents"]] == paths
    assert product["contents"] == [{"path": p, "hash": blake3.blake3(STORE[p]).hexdigest()} for p in paths]
    lines = b"".join(p.encode() + b"\0" + blake3.blake3(STORE[p]).hexdigest().encode() + b"\n" for p in paths)
    assert product["hash"] == blake3.blake3(lines).hexdigest()
    assert product["size"] == sum(len(data) for data in STORE.values())
    assert product["name"] == "t2m.zarr"
    assert trace.global_hash(reversed(product["contents"])) == product["hash"]


def test_directory_hash_with_sha256_and_of_an_empty_directory(tmp_path):
    store = make_store(tmp_path / "s", STORE)
    product = trace.generate(store, algorithm="SHA256")["product"]
    assert all(m["hash"] == hashlib.sha256(STORE[m["path"]]).hexdigest() for m in product["contents"])
    (tmp_path / "empty").mkdir()
    assert trace.generate(tmp_path / "empty")["product"]["hash"] == blake3.blake3(b"").hexdigest()


def test_directory_hash_is_stable_under_file_creation_order(tmp_path):
    forward = make_store(tmp_path / "one" / "t.zarr", STORE)
    backward = make_store(tmp_path / "two" / "t.zarr", STORE, order=reversed(list(STORE)))
    assert trace.generate(forward) == trace.generate(backward)


@pytest.mark.parametrize("change", ["one byte", "rename", "add", "remove", "move to another folder"])
def test_directory_hash_changes_when_any_member_changes(tmp_path, change):
    original = trace.generate(make_store(tmp_path / "a" / "t.zarr", STORE))["product"]["hash"]
    for member in STORE:
        members = dict(STORE)
        if change == "one byte":
            data = bytearray(members[member] or b"\0")
            data[len(data) // 2] ^= 1
            members[member] = bytes(data)
        elif change == "rename":
            members[member + "x"] = members.pop(member)
        elif change == "add":
            members[member + ".extra"] = b""
        elif change == "remove":
            del members[member]
        else:
            members["moved/" + member] = members.pop(member)
        changed = make_store(tmp_path / uuid.uuid4().hex / "t.zarr", members)
        assert trace.generate(changed)["product"]["hash"] != original, (change, member)


# -- the service -------------------------------------------------------------------------------------------------


def test_a_trace_sent_through_the_sdk_is_found_by_hash_and_by_name(client, tmp_path):
    path = write(tmp_path / f"{uuid.uuid4().hex}.nc", os.urandom(10_000))
    generated = trace.generate(path)
    stored = client.send(generated)
    assert stored["origin"] == "researcher" and stored["id"]
    assert stored["product"] == generated["product"]
    by_hash = client.search(hash=generated["product"]["hash"])
    assert [t["id"] for t in by_hash] == [stored["id"]]
    by_name = client.search(name=path.name)
    assert [t["id"] for t in by_name] == [stored["id"]]
    assert client.search(hash=generated["product"]["hash"], name="another-name.nc") == []
    assert client.get(stored["id"]) == stored
    assert client.validate(path.name, generated["product"]["hash"])["valid"] is True


def test_a_directory_trace_round_trips_with_its_contents(client, tmp_path):
    store = make_store(tmp_path / f"{uuid.uuid4().hex}.zarr", STORE)
    stored = client.send([trace.generate(store, algorithm="SHA3")])
    assert len(stored) == 1
    found = client.search(name=store.name)[0]
    assert found["product"]["contents"] == trace.generate(store, algorithm="SHA3")["product"]["contents"]
    assert found["hash_algorithm"] == "SHA3"


def test_more_than_50_traces_are_sent_in_batches(client, tmp_path):
    name = f"{uuid.uuid4().hex}.nc"
    path = write(tmp_path / "f", b"x")
    traces = [trace.generate(path, name=name) for _ in range(120)]
    assert len(client.send(traces)) == 120
    assert len(client.search(name=name)) == 120


def test_module_functions_use_the_environment(sandbox_traces, tmp_path, monkeypatch):
    for variable in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DESP_TRACE_URL", sandbox_traces.url + "/")
    monkeypatch.setenv("DESP_ACCESS_TOKEN", sandbox_traces.token_for("aiuser"))
    path = write(tmp_path / f"{uuid.uuid4().hex}.bin", b"environment")
    stored = trace.send(trace.generate(path))
    assert stored["origin"] == "aiuser"
    assert trace.get(stored["id"]) == stored
    assert [t["id"] for t in trace.search(name=path.name)] == [stored["id"]]
    assert trace.verify(path).ok


def test_malformed_hash_is_a_400_desp_error_with_the_services_message(client):
    with pytest.raises(DespError) as error:
        client.search(hash="not-a-hash")
    assert error.value.status == 400
    assert "Malformed hash" in error.value.message
    bad = {"product": {"name": "x.nc", "size": 1, "hash": "0123"}}
    with pytest.raises(DespError) as error:
        client.send(bad)
    assert error.value.status == 400 and "Malformed hash" in error.value.message
    bad = {"hash_algorithm": "MD5", "product": {"name": "x.nc", "size": 1, "hash": "ab" * 32}}
    with pytest.raises(DespError) as error:
        client.send(bad)
    assert error.value.status == 400 and "BLAKE3" in error.value.message


def test_unknown_id_is_not_found_and_bad_tokens_are_refused(client, sandbox_traces):
    with pytest.raises(NotFound):
        client.get(str(uuid.uuid4()))
    with pytest.raises(DespError) as error:
        trace.TraceClient(sandbox_traces.url, token="not-a-token").search(name="x")
    assert error.value.status == 401


def test_no_url_and_a_service_that_is_down(monkeypatch):
    monkeypatch.delenv("DESP_TRACE_URL", raising=False)
    with pytest.raises(DespError, match="DESP_TRACE_URL"):
        trace.TraceClient()
    with pytest.raises(ServiceUnavailable):
        trace.TraceClient(f"http://127.0.0.1:{free_port()}", token="t", timeout=5).search(name="x")


# -- verification ------------------------------------------------------------------------------------------------


def test_verify_catches_a_one_byte_change_in_a_file(client, tmp_path):
    data = bytearray(os.urandom(2 * MiB + 5))
    path = write(tmp_path / f"{uuid.uuid4().hex}.nc", bytes(data))
    client.send(trace.generate(path))
    assert client.verify(path).ok
    data[MiB + 1] ^= 0x01
    path.write_bytes(bytes(data))
    result = client.verify(path)
    assert not result and result.ok is False
    assert result.expected != result.actual == blake3.blake3(bytes(data)).hexdigest()
    assert "differs" in str(result)


def test_verify_names_the_changed_missing_and_added_members_of_a_directory(client, tmp_path):
    store = make_store(tmp_path / f"{uuid.uuid4().hex}.zarr", STORE)
    stored = client.send(trace.generate(store, algorithm="SHA256"))
    assert client.verify(store).ok
    chunk = bytearray((store / "t2m/0.1").read_bytes())
    chunk[0] ^= 0xFF
    (store / "t2m/0.1").write_bytes(bytes(chunk))
    result = client.verify(store)
    assert (result.ok, result.changed, result.missing, result.added) == (False, ["t2m/0.1"], [], [])
    assert result.algorithm == "SHA256"
    (store / "latitude/0").unlink()
    write(store / "t2m/2.0", b"new")
    result = client.verify(store, trace=stored["id"])
    assert (result.changed, result.missing, result.added) == (["t2m/0.1"], ["latitude/0"], ["t2m/2.0"])
    assert "t2m/0.1" in str(result) and "latitude/0" in str(result)


def test_verify_with_a_trace_dict_needs_no_service(tmp_path, monkeypatch):
    monkeypatch.delenv("DESP_TRACE_URL", raising=False)
    path = write(tmp_path / "f.nc", b"abc")
    generated = trace.generate(path, algorithm="SHA3")
    assert trace.verify(path, generated).ok
    path.write_bytes(b"abd")
    assert not trace.verify(path, generated).ok


def test_verify_of_a_product_never_traced_is_not_found(client, tmp_path):
    with pytest.raises(NotFound, match="No trace"):
        client.verify(write(tmp_path / f"{uuid.uuid4().hex}.nc", b"x"))


# -- signatures --------------------------------------------------------------------------------------------------


def test_sign_and_verify_signature_and_tamper_detection(tmp_path):
    key = private_key_pem()
    store = make_store(tmp_path / "s.zarr", STORE)
    signed = trace.sign(trace.generate(store, inputs=[{"name": "in", "hash": "cd" * 32}]), key)
    assert signed["signature"]["algorithm"] == "ECDSA-P256-SHA256"
    assert signed["signature"]["certificate"] == public_key_pem(key).decode()
    assert trace.verify_signature(signed)
    assert trace.verify_signature(signed, public_key_pem=public_key_pem(key))
    assert not trace.verify_signature(signed, public_key_pem=public_key_pem(private_key_pem()))

    def tampered(edit):
        copy = trace.sign(trace.generate(store), key)
        edit(copy)
        return trace.verify_signature(copy)

    assert not tampered(lambda t: t["product"].update(hash="00" * 32))
    assert not tampered(lambda t: t["product"].update(size=1))
    assert not tampered(lambda t: t["product"].update(name="other.zarr"))
    assert not tampered(lambda t: t["product"]["contents"][0].update(hash="00" * 32))
    assert not tampered(lambda t: t["product"]["contents"].pop())
    assert not tampered(lambda t: t["product"]["inputs"].append({"name": "x", "hash": "ab" * 32}))
    assert not tampered(lambda t: t.update(event="OBSOLETE"))
    assert not tampered(lambda t: t["signature"].update(signature="AAAA"))
    assert not tampered(lambda t: t.update(hash_algorithm="SHA256"))
    # the fields the server fills are not signed
    assert tampered(lambda t: t.update(id="x", timestamp="y", origin="z"))


def test_a_signed_trace_still_verifies_when_read_back_from_the_service(client, tmp_path):
    key = private_key_pem()
    path = write(tmp_path / f"{uuid.uuid4().hex}.nc", b"signed product")
    stored = client.send(trace.sign(trace.generate(path), key))
    assert stored["signature"]["algorithm"] == "ECDSA-P256-SHA256"
    assert trace.verify_signature(client.get(stored["id"]), public_key_pem=public_key_pem(key))


def test_signing_needs_a_p256_key_and_verifying_a_signature(tmp_path):
    generated = trace.generate(write(tmp_path / "f", b"x"))
    with pytest.raises(ValueError, match="P-256"):
        trace.sign(generated, private_key_pem(ec.SECP384R1()))
    with pytest.raises(ValueError, match="no signature"):
        trace.verify_signature(generated)
    with pytest.raises(ValueError, match="Unsupported"):
        trace.verify_signature({**generated, "signature": {"algorithm": "RSA", "certificate": "", "signature": ""}})
