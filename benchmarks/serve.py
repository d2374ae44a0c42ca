"""How fast the MINT-Demo page answers: 32 digits images scored through the HTTP API, and many clients at once.

The demo audit (`gmint demo`'s digits CNN, MLP MINT classifier on its combined layers) is built in --work (or
reused from there), published with its audit.json, and served by `gmint serve` in a subprocess pinned to
--cores CPUs. Two rows:

- `latency-32`: one client posts the same 32 held-out digits (8x8 PNGs, their true classes) --repeats times
  after one warm-up request; wall time per request at the client, and the server's own scoring time.
- `concurrent-<clients>x<images>`: --clients threads, each with its own HTTP connection, post --rounds requests
  of --images-per-client images each, all at once; every answer must be 200 with as many scores as images.

    python -m benchmarks.serve --out benchmarks/results/serve-cpu.json

Rows are appended to --out as they finish and skipped when run again (--force reruns them); a Markdown report is
written beside it. The JSON records the machine, the commit, the library versions and the configuration.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from benchmarks.speed import machine_info
from gmint.data.base import DATASETS
from gmint.data.split import MembershipSplit

Json = dict[str, object]
PACKAGES = ("fastapi", "starlette", "uvicorn", "python-multipart", "httpx", "pillow")


def build_demo(work: Path, seed: int, epochs: int) -> None:
    """The demo audit in `work` (reused when it is there) and its audit.json."""
    from gmint.demo import run_demo
    from gmint.serve.audits import MANIFEST, write_manifest
    from gmint_cli.serving import DEMO_MANIFEST

    if not (work / MANIFEST).is_file():
        run_demo(work, seed=seed, epochs=epochs, show_progress=False)
        write_manifest(work, DEMO_MANIFEST)


def digit_files(work: Path, n: int, offset: int = 0) -> tuple[list[tuple[str, tuple[str, bytes, str]]], list[str]]:
    """`n` held-out digits of the demo's split (members and externals alternately) as PNG uploads with labels."""
    data = DATASETS.get("digits")()
    split = MembershipSplit.load(work / "split.json")
    members = np.intersect1d(split.holdout, split.members)
    external = np.intersect1d(split.holdout, split.external)
    rows = np.ravel(np.column_stack([members[:len(external)], external[:len(members)]]))[offset:offset + n]
    files, labels = [], []
    for i in rows:
        buffer = io.BytesIO()
        Image.fromarray(data.images[i, :, :, 0]).save(buffer, "PNG")
        files.append(("files", (f"digit{i}.png", buffer.getvalue(), "image/png")))
        labels.append(str(data.labels[i]))
    return files, labels


def start_server(work: Path, cores: int) -> tuple[subprocess.Popen[bytes], str]:
    """`gmint serve` on a free port, pinned to the first `cores` CPUs this process may use; waits until it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    env = {**os.environ, "GMINT_NO_PROGRESS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "gmint_cli", "serve", "--audits", str(work), "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: os.sched_setaffinity(0, allowed))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gmint serve exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/api/audits", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gmint serve did not answer within 120 s")


def post(client: httpx.Client, url: str, audit: str, files: list, labels: list[str]) -> tuple[float, Json]:
    start = time.perf_counter()
    response = client.post(f"{url}/api/audits/{audit}/score", files=files, data={"labels": labels}, timeout=300)
    wall = time.perf_counter() - start
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {body}")
    if len(body["images"]) != len(files):
        raise RuntimeError(f"{len(body['images'])} scores for {len(files)} images")
    return wall, body


def latency(url: str, audit: str, work: Path, n: int, repeats: int) -> Json:
    files, labels = digit_files(work, n)
    load = list(os.getloadavg())
    with httpx.Client() as client:
        first, _ = post(client, url, audit, files, labels)  # warm-up: lazy imports, first extraction
        walls, server = [], []
        for _ in range(repeats):
            wall, body = post(client, url, audit, files, labels)
            walls.append(wall)
            server.append(float(body["seconds"]))
    return {"images": n, "repeats": repeats, "first_request_s": first, "wall_s": walls, "server_s": server,
            "median_wall_s": statistics.median(walls), "median_server_s": statistics.median(server),
            "p_value": body["verdict"]["p_value"], "rejects_h0": body["verdict"]["rejects_h0"],
            "test": body["verdict"]["test"], "load_start": load}


def concurrent(url: str, audit: str, work: Path, clients: int, images: int, rounds: int) -> Json:
    uploads = [digit_files(work, images, offset=k * images) for k in range(clients)]
    walls: list[float] = []
    tests: set[str] = set()
    errors: list[str] = []
    load = list(os.getloadavg())
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def one(k: int) -> None:
        with httpx.Client() as client:
            barrier.wait()
            for _ in range(rounds):
                try:
                    wall, body = post(client, url, audit, *uploads[k])
                    with lock:
                        walls.append(wall)
                        tests.add(str(body["verdict"]["test"]))
                except Exception as exc:  # counted, not raised: the row reports every failure
                    with lock:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - start
    return {"clients": clients, "images_per_request": images, "rounds": rounds, "requests": clients * rounds,
            "ok": len(walls), "errors": len(errors), "error_messages": errors[:5], "total_s": total,
            "median_wall_s": statistics.median(walls) if walls else None,
            "p95_wall_s": float(np.quantile(walls, 0.95)) if walls else None, "max_wall_s": max(walls, default=None),
            "images_per_s": len(walls) * images / total, "tests": sorted(tests), "load_start": load}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def report(result: dict) -> str:
    m, rows, config = result["machine"], result["rows"], result["config"]
    lines = ["# MINT-Demo page: scoring through the HTTP API", "",
             f"{m['cpu']}; server pinned to {config['cores']} cores (of {m['usable_cores']} usable); "
             f"torch {m['torch']}, Python {m['python']}; gmint {m['gmint']} at {m['commit'] or '?'}"
             f"{' with uncommitted changes' if m.get('uncommitted_changes') else ''}; {m['date']}.", "",
             "Libraries: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             "Regenerate: `python -m benchmarks.serve --out benchmarks/results/serve-cpu.json --force`.", ""]
    for name, row in sorted(rows.items(), key=lambda item: not item[0].startswith("latency")):
        permutation = any("permutation" in t for t in [row.get("test", ""), *row.get("tests", [])])
        note = (" The verdict of some of these sets is a permutation p-value (at most 8 images with tied scores: "
                "9,999 resamples, `gmint.assess.verdict`)." if permutation else "")
        load = f" Load average at the start: {row['load_start'][0]:.1f}." if "load_start" in row else ""
        if name.startswith("latency"):
            lines += [f"## {name}", "",
                      f"{row['images']} digits images (8x8 PNG) in one request, {row['repeats']} runs after a warm-up: "
                      f"median **{row['median_wall_s']:.3f} s** at the client ({row['median_server_s']:.3f} s scoring "
                      f"on the server); first request {row['first_request_s']:.3f} s. Runs: "
                      + ", ".join(f"{w:.3f}" for w in row["wall_s"]) + " s." + note + load, ""]
        else:
            lines += [f"## {name}", "",
                      f"{row['clients']} clients at once, each posting {row['rounds']} requests of "
                      f"{row['images_per_request']} images: **{row['ok']} of {row['requests']} answered, "
                      f"{row['errors']} errors**; all done in {row['total_s']:.2f} s ({row['images_per_s']:.0f} "
                      f"images/s); per request median {row['median_wall_s']:.3f} s, 95th percentile "
                      f"{row['p95_wall_s']:.3f} s, slowest {row['max_wall_s']:.3f} s." + note + load, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/serve-demo"),
                        help="Folder of the demo audit (built there once, then reused).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve-cpu.json"))
    parser.add_argument("--cores", type=int, default=2, help="CPUs the server may use.")
    parser.add_argument("--latency", type=int, nargs="*", default=[32, 4],
                        help="Images per request of each latency row (one client).")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--concurrent", nargs="*", default=["20x4", "20x10"],
                        help="CLIENTSxIMAGES of each concurrency row: clients at once, images per request.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--force", action="store_true", help="Rerun rows already in --out.")
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("out", "force", "latency", "concurrent")}
    result: Json = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if result.get("config") != config:
        result = {}  # another configuration: its rows do not belong to this one
    result["config"] = config
    rows = result.setdefault("rows", {})
    assert isinstance(rows, dict)
    jobs: dict[str, Callable[[], Json]] = {
        f"latency-{n}": partial(lambda n: latency(url, audit, args.work, n, args.repeats), n) for n in args.latency}
    for spec in args.concurrent:
        clients, images = (int(part) for part in spec.split("x"))
        jobs[f"concurrent-{clients}x{images}"] = partial(
            lambda c, i: concurrent(url, audit, args.work, c, i, args.rounds), clients, images)
    todo = [name for name in jobs if args.force or name not in rows]
    if todo:  # the machine and versions of the latest run that measured something
        result.update({"machine": machine_info(1, torch.device("cpu")), "versions": versions()})
        build_demo(args.work, args.seed, args.epochs)
        process, url = start_server(args.work, args.cores)
        audit = httpx.get(f"{url}/api/audits").json()["audits"][0]["name"]
        try:
            for name in todo:
                rows[name] = jobs[name]()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2))
                print(name, json.dumps({k: v for k, v in rows[name].items() if not isinstance(v, list)}))
        finally:
            process.terminate()
            process.wait(timeout=30)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(report(result) + "\n")


if __name__ == "__main__":
    main()
