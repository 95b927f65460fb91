"""Load test on loopback: many clients searching, uploading, editing and deleting at once, with
faults injected, then a check that no acknowledged write was lost.

    python bench/load_test.py [--clients 16] [--seconds 60] [--kill-at SECONDS] [--dir DIR]
                              [--json out.json]

A fresh data directory gets the demo collection (12 annotated photos, real model); the real
server (`hybrid-search serve`, waitress) runs in its own process on 127.0.0.1. Each client is
a thread with its own keep-alive connection and its own seeded dice, and for `--seconds`
picks requests by weight: API searches (words, a stored photo, both), the search page, image
pages and thumbnails, uploads of new generated photos (multipart and base64 JSON, with an API
token), PATCH edits of the titles of its own photos, and deletes of its own photos. Faults
mixed in: uploads of junk (must be 400), writes without a token (must be 401), uploads whose
connection is dropped halfway through the body (must store nothing), and with `--kill-at`,
the server is killed with SIGKILL at that second and started again on the same port.

Every request's status and latency is recorded. Afterwards the server is stopped and the
data directory is opened directly: every acknowledged upload must be there exactly once with
intact bytes under `originals/<sha[:2]>/<sha>.<ext>`, every acknowledged edit visible in the
database and the Whoosh index, every acknowledged delete gone, nothing stored from a junk,
unauthorised or aborted request, and `hybrid_search.check.check` must find no problem.
A request whose answer was lost to the kill may or may not have happened; either is accepted,
at most once. Exit status 0 only with zero errors and zero data lost.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from web_bench import Connection, Server, Tally, json_request  # noqa: E402

DEMO_IDS = list(range(1, 13))
QUERIES = ["cat", "coffee", "astronaut", "red cup", "rocket launch", "coins", "grass",
           "brick wall", "tabby cat", "space", "retina", "galaxy", "portrait", "texture"]
TOKEN_HEADER = "Authorization"
WEIGHTS = {
    "api text": 18, "api image": 7, "api hybrid": 7, "page": 7, "image page": 4, "thumb": 4,
    "upload": 13, "upload json": 4, "edit": 16, "delete": 5,
    "junk upload": 3, "no token": 2, "aborted upload": 2,
}
EXPECTED = {"upload": 201, "upload json": 201, "junk upload": 400, "no token": 401}


def photo(rng: np.random.Generator) -> bytes:
    """A new 64x48 PNG, different from every other one."""
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def multipart(name: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = f"load-{hashlib.sha256(data).hexdigest()[:16]}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
                 f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n'.encode() + data
                 + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def word(rng: random.Random) -> str:
    """A made-up word, unique enough to find one photo by it."""
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(5))


@dataclass
class Ledger:
    """What the server acknowledged, and what it may or may not have done."""

    uploads: dict[str, int] = field(default_factory=dict)  # sha -> id, acknowledged
    upload_files: dict[str, bytes] = field(default_factory=dict)
    maybe_uploads: set[str] = field(default_factory=set)  # answer lost to the kill
    deletes: dict[str, int] = field(default_factory=dict)
    maybe_deletes: set[str] = field(default_factory=set)
    titles: dict[int, set[str]] = field(default_factory=dict)  # id -> acceptable titles
    find_by: dict[int, str] = field(default_factory=dict)  # id -> word of its last edit
    aborted: set[str] = field(default_factory=set)
    edits: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1


@dataclass
class Run:
    """Shared state of one load test."""

    server: Server
    token: str
    deadline: float
    ledger: Ledger = field(default_factory=Ledger)
    tallies: dict[str, Tally] = field(default_factory=dict)
    down: list[list[float]] = field(default_factory=list)  # [from, until]: server down
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def in_outage(self, start: float, end: float) -> bool:
        return any(start <= b and end >= a for a, b in self.down)

    def record(self, kind: str, status: int, start: float, end: float, note: str = "") -> None:
        with self.lock:
            tally = self.tallies.setdefault(kind, Tally())
            tally.latencies.append((end - start) * 1000)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            expected = EXPECTED.get(kind, 200)
            if status == expected or (status == 0 and self.in_outage(start, end)):
                return
            tally.errors += 1
            if len(self.unexpected) < 50:
                self.unexpected.append(f"{kind}: {status} {note[:200]}")


class Client:
    """One simulated user: a connection, dice, and the photos it uploaded."""

    def __init__(self, run: Run, n: int, seed: int) -> None:
        self.run, self.n = run, n
        self.rng = random.Random(seed * 100 + n)
        self.nrng = np.random.default_rng(seed * 100 + n)
        self.conn = Connection(run.server.host, run.server.port, timeout=120)
        self.auth = {TOKEN_HEADER: f"Bearer {run.token}"}
        # Photos this client may edit: its own uploads, and one demo photo each for the first 12.
        self.mine: dict[int, str] = {n + 1: ""} if n < len(DEMO_IDS) else {}
        self.count = 0

    def loop(self) -> None:
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        try:
            while time.monotonic() < self.run.deadline:
                kind = self.rng.choices(kinds, weights)[0]
                if kind in ("edit", "delete") and not [i for i, s in self.mine.items()
                                                       if kind == "edit" or s]:
                    kind = "upload"
                self.count += 1
                getattr(self, "do_" + kind.replace(" ", "_"))(kind)
        finally:
            self.conn.close()

    def _call(self, kind: str, fn: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        start = time.monotonic()
        try:
            status, body = fn()
        except (OSError, http.client.HTTPException) as e:
            status, body = 0, repr(e).encode()
        self.run.record(kind, status, start, time.monotonic(), body.decode("utf-8", "replace"))
        if status == 0:  # no answer: the server is down; do not hammer it
            time.sleep(0.2)
        return status, body

    def _search(self, kind: str, body: dict[str, Any]) -> None:
        self._call(kind, lambda: json_request(self.conn, "/api/search", body))

    def do_api_text(self, kind: str) -> None:
        self._search(kind, {"text": self.rng.choice(QUERIES)})

    def do_api_image(self, kind: str) -> None:
        self._search(kind, {"like": self.rng.choice(DEMO_IDS)})

    def do_api_hybrid(self, kind: str) -> None:
        self._search(kind, {"text": self.rng.choice(QUERIES), "like": self.rng.choice(DEMO_IDS),
                            "alpha": round(self.rng.random(), 2)})

    def do_page(self, kind: str) -> None:
        query = urlencode({"q": self.rng.choice(QUERIES)})
        self._call(kind, lambda: self.conn.request("GET", "/?" + query))

    def do_image_page(self, kind: str) -> None:
        image_id = self.rng.choice(DEMO_IDS)
        self._call(kind, lambda: self.conn.request("GET", f"/images/{image_id}"))

    def do_thumb(self, kind: str) -> None:
        image_id = self.rng.choice(DEMO_IDS)
        self._call(kind, lambda: self.conn.request("GET", f"/images/{image_id}/thumb"))

    def _upload(self, kind: str, data: bytes, send: Callable[[], tuple[int, bytes]]) -> None:
        sha = hashlib.sha256(data).hexdigest()
        status, body = self._call(kind, send)
        ledger = self.run.ledger
        if status == 201:
            (record,) = json.loads(body)["images"]
            assert record["sha256"] == sha and record["created"], record
            with ledger.lock:
                ledger.uploads[sha] = record["id"]
                ledger.upload_files[sha] = data
                ledger.titles[record["id"]] = {record["title"]}
            self.mine[record["id"]] = sha
        elif status == 0:
            with ledger.lock:
                ledger.maybe_uploads.add(sha)
                ledger.upload_files[sha] = data

    def do_upload(self, kind: str) -> None:
        data = photo(self.nrng)
        body, content_type = multipart(f"client{self.n}-{self.count}.png", data,
                                       title=f"Upload {self.n}-{self.count}", tags="load;test")
        self._upload(kind, data, lambda: self.conn.request(
            "POST", "/api/images", body, {"Content-Type": content_type, **self.auth}))

    def do_upload_json(self, kind: str) -> None:
        data = photo(self.nrng)
        payload = {"image": base64.b64encode(data).decode(), "filename": f"j{self.count}.png",
                   "title": f"Upload {self.n}-{self.count}", "tags": ["load", "json"]}
        self._upload(kind, data, lambda: json_request(self.conn, "/api/images", payload,
                                                      self.auth))

    def do_edit(self, kind: str) -> None:
        image_id = self.rng.choice(list(self.mine))
        key = word(self.rng)
        title = f"Edited {self.n}-{self.count} {key}"
        ledger = self.run.ledger
        status, _ = self._call(kind, lambda: json_request(
            self.conn, f"/api/images/{image_id}", {"title": title}, self.auth, "PATCH"))
        with ledger.lock:
            if status == 200:
                ledger.titles[image_id] = {title}
                ledger.find_by[image_id] = key
                ledger.edits += 1
            elif status == 0:  # it may have happened: either title is right from now on
                ledger.titles.setdefault(image_id, set()).add(title)
                ledger.find_by.pop(image_id, None)
                self.mine.pop(image_id)  # leave it alone: its state is now two-valued

    def do_delete(self, kind: str) -> None:
        own = [i for i, sha in self.mine.items() if sha]
        image_id = self.rng.choice(own)
        sha = self.mine.pop(image_id)
        status, _ = self._call(kind, lambda: self.conn.request(
            "DELETE", f"/api/images/{image_id}", headers=self.auth))
        with self.run.ledger.lock:
            if status == 200:
                self.run.ledger.deletes[sha] = image_id
            elif status == 0:
                self.run.ledger.maybe_deletes.add(sha)

    def do_junk_upload(self, kind: str) -> None:
        junk = b"<html>" + self.rng.randbytes(200) + b"</html>"
        body, content_type = multipart(f"junk-{self.n}-{self.count}.png", junk)
        self._call(kind, lambda: self.conn.request(
            "POST", "/api/images", body, {"Content-Type": content_type, **self.auth}))
        self.run.ledger.fault("junk uploads (expect 400)")

    def do_no_token(self, kind: str) -> None:
        image_id = self.rng.choice(DEMO_IDS)
        self._call(kind, lambda: json_request(self.conn, f"/api/images/{image_id}",
                                              {"title": "HACKED"}, method="PATCH"))
        self.run.ledger.fault("writes without a token (expect 401)")

    def do_aborted_upload(self, kind: str) -> None:
        """Send the headers and half the body of an upload, then hang up."""
        data = photo(self.nrng)
        body, content_type = multipart(f"aborted-{self.n}.png", data, title="ABORTED")
        head = (f"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"{TOKEN_HEADER}: Bearer {self.run.token}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        start = time.monotonic()
        try:
            with socket.create_connection((self.run.server.host, self.run.server.port), 10) as s:
                s.sendall(head + body[: len(body) // 2])
                time.sleep(self.rng.uniform(0, 0.2))
        except OSError:
            pass
        with self.run.lock:
            self.run.tallies.setdefault(kind, Tally()).latencies.append(
                (time.monotonic() - start) * 1000)
        with self.run.ledger.lock:
            self.run.ledger.aborted.add(hashlib.sha256(data).hexdigest())
        self.run.ledger.fault("uploads dropped halfway (expect nothing stored)")


# -- setting up and checking ----------------------------------------------------------------
def make_collection(data_dir: Path) -> str:
    """The demo collection in a fresh data directory; returns an API token."""
    from hybrid_search.collection import Collection
    from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
    from hybrid_search.ingest import ingest
    from hybrid_search.settings import load_settings
    from hybrid_search.web.accounts import Accounts

    with Collection(load_settings(data_dir=data_dir, env={})) as collection:
        report = ingest(collection, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        assert len(report.added) == 12, report.to_dict()
        assert sorted(i for _, i in report.added) == DEMO_IDS
    secret, _ = Accounts(data_dir).create_token("load test")
    return secret


def verify(data_dir: Path, ledger: Ledger, killed: bool) -> dict[str, Any]:
    """Compare the data directory with what the server acknowledged."""
    from hybrid_search.check import check, repair
    from hybrid_search.collection import Collection
    from hybrid_search.settings import load_settings

    lost: list[str] = []
    with Collection(load_settings(data_dir=data_dir, env={})) as collection:
        records = {r.sha256: r for r in collection.store.iter_records()}
        by_id = {r.id: r for r in records.values()}
        for sha, image_id in ledger.uploads.items():
            record = records.get(sha)
            if sha in ledger.deletes:
                if record is not None:
                    lost.append(f"deleted photo {image_id} is back")
                continue
            if record is None:
                if sha not in ledger.maybe_deletes:
                    lost.append(f"acknowledged upload {image_id} ({sha[:12]}) is missing")
                continue
            if record.id != image_id:
                lost.append(f"upload {sha[:12]} has id {record.id}, acknowledged {image_id}")
            stored = Path(record.path)
            ext = "jpg" if record.format == "JPEG" else record.format.lower()
            if stored != collection.root / "originals" / sha[:2] / f"{sha}.{ext}":
                lost.append(f"photo {image_id} is stored at {stored}, not by its hash")
            elif hashlib.sha256(stored.read_bytes()).hexdigest() != sha:
                lost.append(f"the file of photo {image_id} is damaged")
        for sha in set(ledger.uploads) | ledger.maybe_uploads:
            copies = list((collection.root / "originals" / sha[:2]).glob(sha + "*"))
            if len(copies) > 1 or (sha in records and not copies):
                lost.append(f"upload {sha[:12]} is stored {len(copies)} times")
            elif sha in records and sha in ledger.maybe_uploads and hashlib.sha256(
                    copies[0].read_bytes()).hexdigest() != sha:
                lost.append(f"the file of upload {sha[:12]} is damaged")
        checked = {"titles": 0, "found by their new word": 0}
        for image_id, titles in ledger.titles.items():
            record = by_id.get(image_id)
            if record is None:
                continue  # deleted: checked above
            checked["titles"] += 1
            checked["found by their new word"] += bool(ledger.find_by.get(image_id))
            if record.title not in titles:
                lost.append(f"photo {image_id} is titled {record.title!r}, acknowledged "
                            f"{sorted(titles)}")
            key = ledger.find_by.get(image_id)
            if key and image_id not in {i for i, _ in collection.text.search(key, 50)}:
                lost.append(f"photo {image_id} is not found by its new word {key!r}")
        for sha in ledger.aborted:
            if sha in records:
                lost.append(f"a dropped upload ({sha[:12]}) was stored")
        strays = [r for r in records.values() if r.title in ("HACKED", "ABORTED")
                  or r.filename.startswith("junk-")]
        lost += [f"photo {r.id} came from a refused request" for r in strays]
        allowed = set(ledger.uploads) | ledger.maybe_uploads
        unknown = [r.id for r in records.values() if r.id not in DEMO_IDS and r.sha256
                   not in allowed]
        lost += [f"photo {i} was never acknowledged" for i in unknown]
        missing_demo = [i for i in DEMO_IDS if i not in by_id]
        lost += [f"demo photo {i} is gone" for i in missing_demo]
        problems = [str(p) for p in check(collection)]
        # What a kill leaves (a stored file whose row never committed) is for `repair`.
        left = [str(p) for p in repair(collection)] if problems and killed else problems
        return {
            "photos": len(records),
            "acknowledged uploads": len(ledger.uploads),
            "acknowledged deletes": len(ledger.deletes),
            "acknowledged edits": ledger.edits,
            "titles checked": checked["titles"],
            "edited photos found by their new word": checked["found by their new word"],
            "answers lost to the kill": len(ledger.maybe_uploads) + len(ledger.maybe_deletes)
            + sum(1 for t in ledger.titles.values() if len(t) > 1),
            "data lost": len(lost),
            "data lost details": lost[:20],
            "check problems": problems[:20],
            "check problems total": len(problems),
            "problems after repair": left[:20],
            "killed": killed,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, help="SIGKILL the server at this second")
    parser.add_argument("--dir", type=Path, help="data directory (default: a new temporary "
                        "one, deleted after a run that passes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="hs-load-")) / "data"
    if data_dir.exists() and any(data_dir.iterdir()):
        parser.error(f"{data_dir} is not empty: the load test needs a fresh data directory")
    print(f"building the demo collection in {data_dir}", file=sys.stderr)
    token = make_collection(data_dir)
    server = Server(data_dir)
    server.start()
    warm = Connection(server.host, server.port)
    for body in ({"text": "cat"}, {"like": 1}):  # load the models before the clock starts
        assert json_request(warm, "/api/search", body)[0] == 200
    warm.close()
    started = time.monotonic()
    run = Run(server, token, started + args.seconds)
    clients = [Client(run, n, args.seed) for n in range(args.clients)]
    threads = [threading.Thread(target=c.loop, name=f"client-{c.n}") for c in clients]
    for thread in threads:
        thread.start()
    killed = False
    if args.kill_at is not None:
        time.sleep(max(0.0, started + args.kill_at - time.monotonic()))
        outage = [time.monotonic(), float("inf")]
        run.down.append(outage)
        server.stop(kill=True)
        run.ledger.fault("server killed with SIGKILL and restarted")
        server.start()
        outage[1] = time.monotonic() + 1.0  # and a second for the clients to reconnect
        killed = True
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    server.stop()
    server_errors = server.errors_logged
    result = verify(data_dir, run.ledger, killed)
    kinds = {k: t.summary(elapsed) for k, t in sorted(run.tallies.items())}
    served = sum(n for k, t in kinds.items() if k != "aborted upload"
                 for status, n in t["statuses"].items() if status != "0")
    unanswered = sum(t["statuses"].get("0", 0) for t in kinds.values())
    errors = sum(t["errors"] for t in kinds.values())
    all_latencies = [ms for k, t in run.tallies.items() if k != "aborted upload"
                     for ms in t.latencies]  # unanswered ones included: they are few
    p50, p99 = np.percentile(all_latencies, [50, 99]) if all_latencies else (0.0, 0.0)
    report = {
        "clients": args.clients, "seconds": round(elapsed, 1), "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "requests served": served, "requests per second": round(served / elapsed, 1),
        "unanswered during the outage": unanswered, "errors": errors,
        "5xx": sum(n for t in kinds.values() for s, n in t["statuses"].items()
                   if s.startswith("5")),
        "server 500s logged": server_errors, "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1), "faults injected": run.ledger.faults,
        "unexpected": run.unexpected[:20], "by kind": kinds, "integrity": result,
        "data_dir": str(data_dir),
    }
    print(f"\n{args.clients} clients, {elapsed:.0f} s, loopback: {served} requests served "
          f"({served / elapsed:.1f}/s), {errors} errors, data lost: {result['data lost']}\n")
    print("| request | count | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for kind, t in kinds.items():
        print(f"| {kind} | {t['requests']} | {t['errors']} | {t['p50_ms']} | {t['p99_ms']} |")
    print()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = (errors == 0 and result["data lost"] == 0 and server_errors == 0
          and not result["problems after repair"])
    if ok and args.dir is None:  # a failed run's data directory is kept for a look
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
