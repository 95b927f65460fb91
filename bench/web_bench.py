"""Web benchmark: requests per second and p50/p95 latency of `/api/search` (text, image by
stored vector, hybrid) and of the search page, from concurrent clients on loopback.

    python bench/web_bench.py [--images 10000] [--clients 8] [--seconds 30]
                              [--dir /tmp/hs-web-bench-10k] [--json out.json]

The collection is built once and reused: the 1000 Corel-1K photos (`../shared/data/corel1k`,
skipped with a message when absent) ingested by the real model, half of them annotated with
their class, then synthetic rows up to `--images`: each borrows a Corel photo's file and its
image and zero-shot vectors plus a little noise (so every vector is distinct but the
collection looks like photos, not like random points), and 80% get made-up annotations with
real MiniLM meaning vectors. The server is the real one (`hybrid-search serve`, waitress) in
its own process; the clients are threads of this one, each with a keep-alive connection, and
each scenario runs for `--seconds`. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COREL = ROOT.parent / "shared" / "data" / "corel1k"
QUERY_WORDS = {
    "africans": ["people", "village", "tribe", "dance"],
    "beaches": ["beach", "sea", "sand", "coast"],
    "buildings": ["building", "architecture", "church", "city"],
    "buses": ["bus", "red bus", "street", "coach"],
    "dinosaurs": ["dinosaur", "reptile", "fossil", "model"],
    "elephants": ["elephant", "safari", "trunk", "herd"],
    "flowers": ["flower", "rose", "petals", "garden"],
    "food": ["food", "dish", "plate", "dinner"],
    "horses": ["horse", "pony", "meadow", "riding"],
    "mountains": ["mountain", "snow", "peak", "glacier"],
}
FILLER = ["sunny", "old", "bright", "dark", "small", "large", "green", "blue", "quiet", "busy",
          "morning", "evening", "view", "close", "photo", "detail", "group", "landscape",
          "portrait", "colour", "light", "shadow"]


# -- building the collection ----------------------------------------------------------------
def _settings(path: Path) -> Any:
    from hybrid_search.settings import load_settings

    return load_settings(data_dir=path, env={})


def _annotations_csv(corel: Path, target: Path, rng: random.Random) -> Path:
    """Half the Corel photos annotated with words of their class."""
    rows = list(csv.DictReader((corel / "labels.csv").open(encoding="utf-8")))
    with target.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["file", "title", "description", "tags"])
        for row in rows:
            if rng.random() < 0.5:
                continue
            label = row["label"]
            words = QUERY_WORDS[label]
            out.writerow([str(corel / row["file"]),
                          f"{rng.choice(FILLER).title()} {rng.choice(words)}",
                          f"A {rng.choice(FILLER)} photo: {' '.join(rng.sample(words, 3))}.",
                          ";".join([label, *rng.sample(words, 2)])])
    return target


def build(path: Path, n_images: int, corel: Path, seed: int = 7) -> int:
    """Make (or reuse) the benchmark collection; returns how many images it holds."""
    from hybrid_search.collection import SEMANTIC_MODEL, Collection
    from hybrid_search.embedding import l2_normalize
    from hybrid_search.ingest import ingest

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    with Collection(_settings(path)) as collection:
        if collection.store.count() >= n_images:
            return collection.store.count()
        if collection.store.count() == 0:
            started = time.perf_counter()
            annotations = _annotations_csv(corel, path.parent / f"{path.name}-corel.csv", rng)
            report = ingest(collection, [corel / "images"], annotations=annotations)
            print(f"ingested {len(report.added)} Corel photos in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        records = collection.store.get_many(sorted(collection.store.all_ids()))
        visual = collection.visual_model_id
        models = [collection.model_id] + ([visual] if visual else [])
        loaded = {m: collection.store.load_vectors(m) for m in models}
        rows = {m: {int(i): (v, float(nm)) for i, v, nm in zip(*loaded[m], strict=True)}
                for m in models}
        sources = [r for r in records if all(r.id in rows[m] for m in models)]
        started = time.perf_counter()
        done = collection.store.count()
        while done < n_images:
            chunk = min(1000, n_images - done)
            items = []
            for j in range(chunk):
                src = sources[(done + j) % len(sources)]
                label = rng.choice(list(QUERY_WORDS))
                annotated = rng.random() < 0.8
                words = rng.sample(QUERY_WORDS[label], 2) + rng.sample(FILLER, 3)
                vectors = {}
                for m in models:
                    vec, norm = rows[m][src.id]
                    noisy = vec + nrng.normal(0, 0.35 / np.sqrt(vec.size), vec.size)
                    vectors[m] = (l2_normalize(noisy.astype(np.float32)[None, :])[0], norm)
                image_vec, image_norm = vectors[collection.model_id]
                items.append(replace(
                    _new_image(src, f"synthetic-{seed}-{done + j}"),
                    title=" ".join(words[:3]).capitalize() if annotated else "",
                    description=(f"Synthetic photo {done + j}: " + " ".join(words)
                                 if annotated else ""),
                    tags=(label, *words[:2]) if annotated else (),
                    model=collection.model_id, vector=image_vec, norm=image_norm,
                    extra_vectors=tuple((m, v, nm) for m, (v, nm) in vectors.items()
                                        if m != collection.model_id),
                ))
            texts = [(n, f"{it.title}. {it.description} {' '.join(it.tags)}")
                     for n, it in enumerate(items) if it.title]
            meaning = collection.text_embedder.encode_texts([t for _, t in texts])
            for (n, _), vec in zip(texts, meaning, strict=True):
                items[n] = replace(items[n], extra_vectors=items[n].extra_vectors
                                   + ((SEMANTIC_MODEL, vec, 1.0),))
            collection.add(items)
            done += chunk
            print(f"stored {done}/{n_images} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
        return collection.store.count()


def _new_image(src: Any, key: str) -> Any:
    from hybrid_search.storage import NewImage

    return NewImage(sha256=hashlib.sha256(key.encode()).hexdigest(), path=src.path,
                    filename=f"{key}.jpg", format=src.format, width=src.width,
                    height=src.height, bytes=src.bytes)


# -- the server -------------------------------------------------------------------------------
@dataclass
class Server:
    """A `hybrid-search serve` process on loopback."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until it listens (port 0: any free port, kept after)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
        env["HYBRID_WEB_ADMIN_PASSWORD"] = "benchmark password"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hybrid_search.cli", "--data-dir", str(self.data_dir),
             "serve", "--host", self.host, "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        ready = threading.Event()

        def drain(stream: Any) -> None:
            for line in stream:
                self.log.append(line.rstrip("\n"))
                found = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()

        threading.Thread(target=drain, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n" + "\n".join(self.log[-20:]))

    def stop(self, kill: bool = False) -> None:
        """Ctrl+C (the server closes the collection cleanly), or SIGKILL when `kill`."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.send_signal(2)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def errors_logged(self) -> int:
        """Requests that failed inside the app (Flask logs each 500)."""
        return sum(1 for line in self.log if "ERROR in app" in line)


@contextmanager
def running(data_dir: Path) -> Iterator[Server]:
    server = Server(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- clients ----------------------------------------------------------------------------------
class Connection:
    """A keep-alive HTTP/1.1 connection that reconnects after a failure."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            response = self._conn.getresponse()
            data = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def json_request(conn: Connection, path: str, body: dict[str, Any],
                 headers: dict[str, str] | None = None,
                 method: str = "POST") -> tuple[int, bytes]:
    return conn.request(method, path, json.dumps(body).encode(),
                        {"Content-Type": "application/json", **(headers or {})})


def percentiles(values: list[float], *qs: float) -> list[float]:
    if not values:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values), qs)]


@dataclass
class Tally:
    """Latencies (ms) and failures of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self, seconds: float | None = None) -> dict[str, Any]:
        p50, p95, p99 = percentiles(self.latencies, 50, 95, 99)
        out: dict[str, Any] = {"requests": len(self.latencies), "errors": self.errors,
                               "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                               "p99_ms": round(p99, 1),
                               "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}
        if seconds:
            out["rps"] = round(len(self.latencies) / seconds, 1)
        return out


Scenario = Callable[[Connection, random.Random], tuple[int, bytes]]


def run_clients(host: str, port: int, scenario: Scenario, clients: int, seconds: float,
                seed: int = 1) -> tuple[Tally, float]:
    """`clients` threads run `scenario` back to back for `seconds`; returns their tally."""
    tally = Tally()
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        conn = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    status, _ = scenario(conn, rng)
                except (OSError, http.client.HTTPException):
                    status = 0
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    tally.latencies.append(ms)
                    tally.statuses[status] = tally.statuses.get(status, 0) + 1
                    if status != 200:
                        tally.errors += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - start


def queries(rng: random.Random, n: int = 300) -> list[str]:
    """Search words like people type: one to three words of the collection's themes."""
    words = [w for ws in QUERY_WORDS.values() for w in ws] + list(QUERY_WORDS)
    return [" ".join(rng.sample(words, rng.choice((1, 1, 2, 3)))) for _ in range(n)]


def scenarios(ids: list[int], pool: list[str]) -> dict[str, Scenario]:
    from urllib.parse import urlencode

    return {
        "api text": lambda c, r: json_request(c, "/api/search", {"text": r.choice(pool)}),
        "api image (like)": lambda c, r: json_request(c, "/api/search",
                                                      {"like": r.choice(ids)}),
        "api hybrid": lambda c, r: json_request(c, "/api/search", {
            "text": r.choice(pool), "like": r.choice(ids), "alpha": 0.5}),
        "page /?q=": lambda c, r: c.request("GET", "/?" + urlencode({"q": r.choice(pool)})),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hs-web-bench-10k"))
    parser.add_argument("--corel", type=Path, default=COREL)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not (args.corel / "labels.csv").is_file():
        print(f"web_bench: skipped: the Corel-1K photos are not at {args.corel} "
              "(pass --corel)", file=sys.stderr)
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    total = build(args.dir, args.images, args.corel)
    rng = random.Random(3)
    pool = queries(rng)
    with running(args.dir) as server:
        conn = Connection(server.host, server.port)
        listing = json.loads(conn.request("GET", "/api/images?limit=1000")[1])
        ids = [r["id"] for r in listing["images"]]
        ids += rng.sample(range(1, total + 1), 1000)
        for name, scenario in scenarios(ids, pool).items():  # load the models, warm caches
            for _ in range(3):
                status, body = scenario(conn, rng)
                assert status == 200, (name, status, body[:300])
        conn.close()
        results: dict[str, Any] = {}
        for name, scenario in scenarios(ids, pool).items():
            tally, elapsed = run_clients(server.host, server.port, scenario, args.clients,
                                         args.seconds)
            results[name] = tally.summary(elapsed)
            print(f"{name}: {results[name]}", file=sys.stderr)
        errors_logged = server.errors_logged
    report = {
        "images": total, "clients": args.clients, "seconds_per_scenario": args.seconds,
        "cpus": os.cpu_count(), "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "server_threads": 8, "server_errors_logged": errors_logged, "results": results,
    }
    print(f"\n{total} images, {args.clients} clients x {args.seconds:g} s per row, loopback\n")
    print("| request | requests | req/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['errors']} |")
    print()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
