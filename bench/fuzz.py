"""Fuzz the decoders: mutated records and mutated ledgers must be accepted or rejected with the
project's own error, never crash.

    python bench/fuzz.py [--records 100000] [--ledgers 100000] [--out bench/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from onebyte.codec import Codec
from onebyte.errors import OnebyteError
from onebyte.ledger import LedgerWriter, verify_ledger
from onebyte.record import build_record, decode_record

RUN = b"fuzz-run-tag-16b"


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--ledgers", type=int, default=100_000)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    seeds = [build_record(c, RUN, r, 3, 0, rng.normal(size=k) * 10, r, b"k" * 16).to_bytes()
             for c in Codec for r, k in ((0, 1), (5, 16), (9, 200))]
    t = time.perf_counter()
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    for i in range(a.records):
        data = mutate(rng, seeds[i % len(seeds)])
        try:
            decode_record(data, run_tag=RUN, secret=b"k" * 16)
            outcomes["accepted_unchanged" if data in seeds else "accepted_changed"] += 1
        except OnebyteError:
            outcomes["rejected"] += 1
        except Exception as exc:  # a crash: what this run is looking for
            crashes.append(f"record: {type(exc).__name__}: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.obl"
        with LedgerWriter(path) as w:
            w.append(seeds)
        good = path.read_bytes()
        for _ in range(a.ledgers):
            path.write_bytes(mutate(rng, good))
            try:
                verify_ledger(path)
                outcomes["ledger_valid"] += 1
            except OnebyteError:
                outcomes["ledger_rejected"] += 1
            except Exception as exc:
                crashes.append(f"ledger: {type(exc).__name__}: {exc}")
    result = {"mutated_records": a.records, "mutated_ledgers": a.ledgers, **outcomes, "crashes": len(crashes),
              "crash_examples": crashes[:5], "seconds": round(time.perf_counter() - t, 1),
              "command": f"python bench/fuzz.py --records {a.records} --ledgers {a.ledgers}",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
