"""Traceability hashing and ledger throughput, each against a baseline in the same run.

1. Hashing: `desp_lab.trace.generate` (BLAKE3, and SHA256) on a ~256 MiB file of random bytes, against reading
   the same file with no hashing (same 1 MiB block, one reused buffer) and against plain `hashlib.sha256` and the
   plain `blake3` package in the usual read-update loop. Target: `generate` (BLAKE3) at least 80 % of the
   read-only throughput. Measured in two conditions, alternating the methods within each repetition, median of N:
   * disk: the file is dropped from the page cache before every run (posix_fadvise DONTNEED after an fsync), so
     every method reads it from the disk, as when tracing a product just written or downloaded;
   * page cache: the file stays in memory, so "reading" is a memory copy and hashing speed (CPU) is the limit.
2. Ledger: `ledger_report()` from `benchmarks/ledger.py` (transactions per second with idempotency keys on SQLite,
   target >= 1000/s), when that file is present.

Run: `.venv/bin/python benchmarks/trace_ledger.py [--size-mib 256] [--repeat 7] [--skip-ledger]`. The file is
written to a temporary directory (`--dir` to choose one on another disk) and deleted at the end.
"""

import argparse
import hashlib
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "extensions"))

import blake3  # noqa: E402

from desp_lab import trace  # noqa: E402

MiB = 1 << 20
TARGET = 0.80


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as stream:
        for offset in range(0, size, 16 * MiB):
            stream.write(os.urandom(min(16 * MiB, size - offset)))
        stream.flush()
        os.fsync(stream.fileno())  # clean pages only: DONTNEED can then drop them


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_only(path: Path) -> None:
    buffer = memoryview(bytearray(trace.BLOCK_SIZE))
    with open(path, "rb", buffering=0) as stream:
        while stream.readinto(buffer):
            pass


def plain_loop(hasher):
    def run(path: Path) -> str:
        h = hasher()
        with open(path, "rb") as stream:
            while block := stream.read(trace.BLOCK_SIZE):
                h.update(block)
        return h.hexdigest()

    return run


METHODS = {
    "read only (no hash)": read_only,
    "generate BLAKE3": lambda path: trace.generate(path),
    "generate SHA256": lambda path: trace.generate(path, algorithm="SHA256"),
    "plain blake3 package": plain_loop(blake3.blake3),
    "plain hashlib.sha256": plain_loop(hashlib.sha256),
}


def measure(path: Path, size: int, repeat: int, cold: bool) -> dict[str, float]:
    """Median MB/s per method; methods alternate within each repetition, rotating the order."""
    seconds = {name: [] for name in METHODS}
    names = list(METHODS)
    for round_ in range(repeat):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            if cold:
                drop_from_page_cache(path)
            else:
                read_only(path)  # make sure it is cached
            started = time.perf_counter()
            METHODS[name](path)
            seconds[name].append(time.perf_counter() - started)
    return {name: size / MiB / statistics.median(times) for name, times in seconds.items()}


def hashing(directory: Path, size_mib: int, repeat: int) -> dict[str, bool]:
    path = directory / "trace-benchmark.bin"
    size = size_mib * MiB
    verdicts = {}
    try:
        print(f"1. hashing a {size_mib} MiB file of random bytes ({path.parent}), median of {repeat}, MiB/s")
        write_random_file(path, size)
        data_check = trace.generate(path, algorithm="SHA256")["product"]["hash"]
        assert data_check == plain_loop(hashlib.sha256)(path), "generate and hashlib disagree"
        for label, cold in (("disk (page cache dropped before each run)", True), ("page cache (file in memory)", False)):
            speeds = measure(path, size, repeat, cold)
            baseline = speeds["read only (no hash)"]
            print(f"\n   {label}")
            print(f"   {'method':<24} {'MiB/s':>8} {'/ read only':>12}")
            for name, speed in speeds.items():
                print(f"   {name:<24} {speed:>8.0f} {speed / baseline:>12.2f}")
            ratio = speeds["generate BLAKE3"] / baseline
            vs_sha = speeds["generate BLAKE3"] / speeds["plain hashlib.sha256"]
            verdict = ratio >= TARGET
            verdicts[label.split(" (")[0]] = verdict
            print(f"   generate BLAKE3 / read only = {ratio:.2f} (target >= {TARGET:.2f}): "
                  f"{'PASS' if verdict else 'FAIL'}; generate BLAKE3 / plain hashlib.sha256 = {vs_sha:.2f}")
    finally:
        path.unlink(missing_ok=True)
    return verdicts


def ledger() -> None:
    print("\n2. ledger")
    if not (ROOT / "benchmarks" / "ledger.py").is_file():
        print("ledger benchmark: benchmarks/ledger.py not present")
        return
    importlib.import_module("benchmarks.ledger").ledger_report()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="size of the hashed file (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per measurement (default %(default)s)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--skip-ledger", action="store_true", help="only the hashing part")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="desp-bench-trace-", dir=args.dir))
    try:
        verdicts = hashing(workdir, args.size_mib, args.repeat)
        print("\nsummary (hashing): " + ", ".join(f"{where}: {'PASS' if ok else 'FAIL'}"
                                                   for where, ok in verdicts.items()))  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.skip_ledger:
        ledger()


if __name__ == "__main__":
    main()
