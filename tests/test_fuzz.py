"""Fuzz the decoders: mutated records and mutated ledgers are accepted or rejected with the
project's own error, never crash.

The fast version runs with every ``pytest``; the large one is marked ``fuzz``:

    python -m pytest -m fuzz tests/test_fuzz.py

``ONEBYTE_FUZZ_RECORDS`` / ``ONEBYTE_FUZZ_LEDGERS`` set its size (default 20,000 each) and
``ONEBYTE_FUZZ_REPORT=PATH`` writes the counts as JSON (the benchmark report's fuzz section:
``python -m bench.experiments.fuzz``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from onebyte.codec import Codec
from onebyte.errors import OnebyteError
from onebyte.ledger import LedgerWriter, verify_ledger
from onebyte.record import build_record, decode_record

RUN = b"fuzz-run-tag-16b"
SECRET = b"k" * 16


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    """One to three of: flip a byte, truncate, insert random bytes, reverse a span, replace all."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(5)
        if op == 0 and b:
            b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
        elif op == 1 and b:
            del b[rng.integers(len(b)):]
        elif op == 2:
            pos = int(rng.integers(len(b) + 1))
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 40))).astype(np.uint8).tobytes()
        elif op == 3 and len(b) > 2:
            i, j = sorted(rng.integers(len(b), size=2))
            b[i:j] = b[i:j][::-1]
        else:
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 200))).astype(np.uint8).tobytes())
    return bytes(b)


def fuzz(records: int, ledgers: int, work: Path, seed: int = 0) -> tuple[Counter[str], list[str]]:
    """Outcome counts and crash descriptions for ``records`` mutated records and ``ledgers`` ledgers."""
    rng = np.random.default_rng(seed)
    seeds = [build_record(c, RUN, r, 3, 0, rng.normal(size=k) * 10, r, SECRET).to_bytes()
             for c in Codec for r, k in ((0, 1), (5, 16), (9, 200))]
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    for i in range(records):
        data = mutate(rng, seeds[i % len(seeds)])
        try:
            decode_record(data, run_tag=RUN, secret=SECRET)
            outcomes["accepted_unchanged" if data in seeds else "accepted_changed"] += 1
        except OnebyteError:
            outcomes["rejected"] += 1
        except Exception as exc:  # a crash: what this test is looking for
            crashes.append(f"record: {type(exc).__name__}: {exc}")
    path = work / "l.obl"
    with LedgerWriter(path) as w:
        w.append(seeds)
    good = path.read_bytes()
    for _ in range(ledgers):
        path.write_bytes(mutate(rng, good))
        try:
            verify_ledger(path)
            outcomes["ledger_valid"] += 1
        except OnebyteError:
            outcomes["ledger_rejected"] += 1
        except Exception as exc:
            crashes.append(f"ledger: {type(exc).__name__}: {exc}")
    return outcomes, crashes


def _check(outcomes: Counter[str], crashes: list[str], records: int, ledgers: int) -> None:
    assert not crashes, crashes[:5]
    assert outcomes["accepted_changed"] == 0, "a mutated record passed its authentication tag"
    assert outcomes["rejected"] + outcomes["accepted_unchanged"] == records
    assert outcomes["ledger_rejected"] + outcomes["ledger_valid"] == ledgers
    assert outcomes["rejected"] > 0 and outcomes["ledger_rejected"] > 0  # the mutations do reach the decoders


def test_fuzz_small(tmp_path: Path) -> None:
    """5,000 records and 2,000 ledgers: well under a second."""
    outcomes, crashes = fuzz(5000, 2000, tmp_path)
    _check(outcomes, crashes, 5000, 2000)


@pytest.mark.fuzz
def test_fuzz(tmp_path: Path) -> None:
    records = int(os.environ.get("ONEBYTE_FUZZ_RECORDS", "20000"))
    ledgers = int(os.environ.get("ONEBYTE_FUZZ_LEDGERS", "20000"))
    t = time.perf_counter()
    outcomes, crashes = fuzz(records, ledgers, tmp_path)
    report = os.environ.get("ONEBYTE_FUZZ_REPORT")
    if report:  # written before the checks, so that a failing run still says what crashed
        Path(report).write_text(json.dumps(
            {"mutated_records": records, "mutated_ledgers": ledgers, **outcomes, "crashes": len(crashes),
             "crash_examples": crashes[:5], "seconds": round(time.perf_counter() - t, 1)}, indent=2) + "\n")
    _check(outcomes, crashes, records, ledgers)
