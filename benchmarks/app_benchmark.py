"""Benchmark of the draw-a-digit web app (digitlab/serving/app.py), as the real server process on 127.0.0.1.

It starts `python -m digitlab.serving.app` on a free port, posts what the page posts (a drawn 7 as a PNG, the
multipart field `image`) and measures: seconds from process start to the first prediction; BURST uploads at once
(how many answered right, statuses, p50/p99); SEQUENTIAL requests' latency on one connection; SLOW_CLIENTS sockets
stalled mid-body, and one ordinary upload beside them; throughput of CLIENTS concurrent clients over CONCURRENT
requests; the server's VmRSS and VmHWM after the first prediction and after TOTAL requests. The clients share the
server's cores; every request and phase is bounded, so the run stops by itself. --baseline CHECKOUT measures another
checkout's app first (PYTHONPATH=CHECKOUT, --baseline-model) and prints the ratios. Without data/model/model.onnx
it waits for it up to MODEL_WAIT_S, then trains a stand-in and says so.

Usage: python benchmarks/app_benchmark.py [--model data/model/model.onnx] [--output benchmarks/app_results.json]
                                          [--baseline CHECKOUT --baseline-model data/model/model.keras]
Writes the JSON file and prints a Markdown table.
"""

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from baseline import baseline_env, describe  # benchmarks/baseline.py, beside this script
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BURST = 100  # uploads released at once, as when a class opens the page together
SEQUENTIAL = 500
SLOW_CLIENTS = 40
SLOW_WAIT_S = 20  # how long a slow client waits for the server to answer or drop it
CLIENTS = 8
CONCURRENT = 2_000
TOTAL = 10_000  # requests in all before memory is read the second time
WARM_UP = 20
REQUEST_TIMEOUT_S = 30
START_TIMEOUT_S = 120
MODEL_WAIT_S, MODEL_RETRY_S = 600, 60
TARGETS = {"latency_p50_ms": 30, "first_prediction_s": 1.5, "burst_p99_ms": 1000}


def drawn_seven() -> bytes:
    """What the page posts: its 280x280 canvas, white strokes on black, as a PNG."""
    canvas = Image.new("L", (280, 280))
    ImageDraw.Draw(canvas, "L").line([(70, 60), (210, 60), (115, 235)], fill=255, width=20, joint="curve")
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def find_model(path: Path) -> tuple[Path, str]:
    """(model file, where it came from): `path`, waited for, else a stand-in trained here."""
    waited = 0
    while not path.is_file() and waited < MODEL_WAIT_S:
        print(f"{path} does not exist yet; retrying in {MODEL_RETRY_S} s", flush=True)
        time.sleep(MODEL_RETRY_S)
        waited += MODEL_RETRY_S
    if path.is_file():
        return path, str(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
    return train_stand_in(), f"a stand-in: {path} did not appear within {MODEL_WAIT_S // 60} minutes"


def train_stand_in() -> Path:
    """A model trained on 12,000 MNIST images for 2 epochs, in a temporary folder.
    Without batch normalisation: with it, 2 short epochs leave its running statistics unsettled."""
    from digitlab.shared.mnist import SHA256
    from digitlab.shared.params import Params, load_params, with_overrides

    from digitlab.images.mnist_look import to_model_input
    from digitlab.raw.splits import load_split
    from digitlab.training.fitting import fit

    folders = [
        os.environ.get("MNIST_MIRROR", ""),
        PROJECT_ROOT.parent / "shared" / "data" / "mnist",
        PROJECT_ROOT / "data" / "raw",
    ]
    mirror = next((Path(f) for f in folders if f and all(Path(f, name).is_file() for name in SHA256)), None)
    if mirror is None:
        sys.exit("error: no model and no MNIST files to train a stand-in: set MNIST_MIRROR or run `dvc repro`")
    images, labels = load_split(mirror, "train")
    overrides = {"train.epochs": 2, "model.batch_norm": False}
    params = Params.model_validate(with_overrides(load_params(PROJECT_ROOT / "params.yaml").model_dump(), overrides))
    train = {"images": to_model_input(images[:12000]), "labels": labels[:12000]}
    val = {"images": to_model_input(images[-1000:]), "labels": labels[-1000:]}
    from digitlab.training.saving import export_onnx

    path = Path(tempfile.mkdtemp(prefix="app-benchmark-")) / "model.onnx"
    export_onnx(fit(params, train, val), path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def post(client: httpx.Client, url: str, png: bytes) -> float:
    """One prediction; its latency in seconds. Raises if it is not a 200 reading a digit."""
    started = time.perf_counter()
    response = client.post(url, files={"image": ("drawing.png", png, "image/png")})
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or response.json()["digit"] is None:
        raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:200]}")
    return elapsed


def wait_for_first_prediction(url: str, png: bytes, process: subprocess.Popen, started: float) -> tuple[float, int]:
    """(seconds from `started` to the first 200 from /predict, the digit it read)."""
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            sys.exit(f"error: the server exited with {process.returncode} before answering")
        try:
            response = httpx.post(url, files={"image": ("drawing.png", png, "image/png")}, timeout=REQUEST_TIMEOUT_S)
            if response.status_code == 200:
                return time.monotonic() - started, response.json()["digit"]
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.05)
    sys.exit(f"error: no prediction within {START_TIMEOUT_S} s of the server's start")


def sequential(url: str, png: bytes, count: int) -> np.ndarray:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        return np.array([post(client, url, png) for _ in range(count)])


def concurrent(url: str, png: bytes, count: int, clients: int) -> tuple[np.ndarray, float]:
    """(latencies, wall seconds) of `count` requests sent by `clients` threads, each on its own connection."""
    latencies, failures, lock = [], [], threading.Lock()
    remaining = iter(range(count))  # shared: each thread takes the next request number until none are left

    def client_loop():
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                try:
                    latency = post(client, url, png)
                except (httpx.HTTPError, RuntimeError) as error:
                    with lock:
                        failures.append(repr(error))
                    continue
                with lock:
                    latencies.append(latency)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        sys.exit(f"error: {len(failures)} of {count} concurrent requests failed, e.g. {failures[0]}")
    return np.array(latencies), wall


def burst(url: str, png: bytes, count: int) -> dict:
    """`count` uploads, each on its own connection, released together by a barrier."""
    answers, lock = [], threading.Lock()
    barrier = threading.Barrier(count)

    def one_user():
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            barrier.wait()
            started = time.perf_counter()
            try:
                response = client.post(url, files={"image": ("drawing.png", png, "image/png")})
                answer = (response.status_code, response.json().get("digit") if response.status_code == 200 else None)
            except httpx.HTTPError as error:
                answer = (type(error).__name__, None)
            with lock:
                answers.append((*answer, time.perf_counter() - started))

    threads = [threading.Thread(target=one_user) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = np.array([seconds for _, _, seconds in answers])
    statuses = dict(Counter(str(status) for status, _, _ in answers))
    return {
        "requests": count,
        "answered_200_and_read_7": sum(s == 200 and d == 7 for s, d, _ in answers),
        "statuses": statuses,
        "p50_ms": ms(latencies, 50),
        "p99_ms": ms(latencies, 99),
    }


def slow_clients(url: str, png: bytes, port: int, count: int) -> dict:
    """`count` clients that stall in their bodies, and one ordinary upload sent while they wait."""
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    stalled = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=SLOW_WAIT_S)
            sock.sendall(head + png[:3])
            stalled.append(sock)
        time.sleep(0.5)  # let the server take them all in before the ordinary request
        started = time.perf_counter()
        try:
            response = httpx.post(url, files={"image": ("drawing.png", png, "image/png")}, timeout=REQUEST_TIMEOUT_S)
            ordinary = {"status": response.status_code, "seconds": round(time.perf_counter() - started, 3)}
        except httpx.HTTPError as error:
            ordinary = {"status": type(error).__name__, "seconds": round(time.perf_counter() - started, 3)}
        # What became of the slow clients: an answer (its status) or nothing by SLOW_WAIT_S.
        deadline = time.monotonic() + SLOW_WAIT_S
        fates = Counter()
        for sock in stalled:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                first_line = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
                fate = first_line.split(" ")[1] if first_line.startswith("HTTP/") else "closed"
            except TimeoutError:
                fate = f"no answer in {SLOW_WAIT_S} s"
            except ConnectionError:
                fate = "reset"
            fates[fate] += 1
    finally:
        for sock in stalled:
            sock.close()
    return {"slow_clients": count, "ordinary_request": ordinary, "slow_clients_answered": dict(fates)}


def ms(seconds: np.ndarray, q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


def measure(command: list[str], env: dict, cwd: Path) -> dict:
    """Start the app with `command` and run every phase against it; its figures."""
    png = drawn_seven()
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "server.log", "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            first_prediction_s, digit = wait_for_first_prediction(url, png, process, started)
            print(f"  first prediction after {first_prediction_s:.2f} s: {digit}", flush=True)
            sequential(url, png, WARM_UP)
            memory_before = memory_kb(process.pid)
            at_once = burst(url, png, BURST)
            print(
                f"  {BURST} at once: {at_once['answered_200_and_read_7']} answered 200 and right, "
                f"statuses {at_once['statuses']}, p99 {at_once['p99_ms']} ms",
                flush=True,
            )
            one_by_one = sequential(url, png, SEQUENTIAL)
            print(f"  {SEQUENTIAL} sequential: p50 {ms(one_by_one, 50)} ms", flush=True)
            beside_slow = slow_clients(url, png, port, SLOW_CLIENTS)
            print(
                f"  beside {SLOW_CLIENTS} slow clients: {beside_slow['ordinary_request']}; the slow ones: "
                f"{beside_slow['slow_clients_answered']}",
                flush=True,
            )
            loaded, wall = concurrent(url, png, CONCURRENT, CLIENTS)
            print(f"  {CLIENTS} clients: {CONCURRENT / wall:.1f} requests/s", flush=True)
            # The rest of the TOTAL, in two halves: RSS read in between tells a plateau from a steady leak.
            sent = 1 + WARM_UP + BURST + SEQUENTIAL + 1 + CONCURRENT
            rss_by_requests = {sent: memory_kb(process.pid)["VmRSS"]}
            half = (TOTAL - sent) // 2
            concurrent(url, png, half, CLIENTS)
            rss_by_requests[sent + half] = memory_kb(process.pid)["VmRSS"]
            concurrent(url, png, TOTAL - sent - half, CLIENTS)
            memory_after = memory_kb(process.pid)
            rss_by_requests[TOTAL] = memory_after["VmRSS"]
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {
        "digit_read": digit,
        "first_prediction_s": round(first_prediction_s, 2),
        "burst": at_once,
        "sequential": {
            "requests": SEQUENTIAL,
            "p50_ms": ms(one_by_one, 50),
            "p90_ms": ms(one_by_one, 90),
            "p99_ms": ms(one_by_one, 99),
            "max_ms": round(float(one_by_one.max()) * 1000, 2),
            "mean_ms": round(float(one_by_one.mean()) * 1000, 2),
        },
        "slow_clients": beside_slow,
        "concurrent": {
            "clients": CLIENTS,
            "requests": CONCURRENT,
            "wall_s": round(wall, 2),
            "requests_per_s": round(CONCURRENT / wall, 1),
            "p50_ms": ms(loaded, 50),
            "p99_ms": ms(loaded, 99),
        },
        "memory": {
            "requests_in_all": TOTAL,
            "rss_before_mb": round(memory_before["VmRSS"] / 1024, 1),
            "rss_after_mb": round(memory_after["VmRSS"] / 1024, 1),
            "rss_growth_mb": round((memory_after["VmRSS"] - memory_before["VmRSS"]) / 1024, 1),
            "peak_rss_before_mb": round(memory_before["VmHWM"] / 1024, 1),
            "peak_rss_after_mb": round(memory_after["VmHWM"] / 1024, 1),
            "rss_mb_after_requests": {count: round(kb / 1024, 1) for count, kb in rss_by_requests.items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "data" / "model" / "model.onnx")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "app_results.json")
    parser.add_argument("--baseline", type=Path, help="another checkout of this repository whose app to measure first")
    parser.add_argument(
        "--baseline-model",
        type=Path,
        default=PROJECT_ROOT / "data" / "model" / "model.keras",
        help="the model file the baseline's app reads (default: data/model/model.keras)",
    )
    args = parser.parse_args()
    model, model_note = find_model(args.model)
    load_before = os.getloadavg()[0]
    app = [sys.executable, "-m", "digitlab.serving.app"]

    runs = {}
    if args.baseline:
        print(f"baseline: {describe(args.baseline)}, {args.baseline_model}", flush=True)
        runs["baseline"] = {
            "checkout": describe(args.baseline),
            "model": str(args.baseline_model),
            **measure(
                [*app, "--model", str(args.baseline_model.resolve())], baseline_env(args.baseline), args.baseline
            ),
        }
    print(f"this checkout: {model_note}", flush=True)
    runs["this"] = {
        "checkout": str(PROJECT_ROOT),
        "model": model_note,
        **measure([*app, "--model", str(model)], dict(os.environ), PROJECT_ROOT),
    }

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_average_1min_before": round(load_before, 2),
        },
        **runs,
        "targets": TARGETS,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def rows(r: dict) -> list[tuple[str, str]]:
    """(measure, value) for one app's figures."""
    b, s, w, c, m = r["burst"], r["sequential"], r["slow_clients"], r["concurrent"], r["memory"]
    ordinary = w["ordinary_request"]
    return [
        ("first prediction after process start", f"{r['first_prediction_s']:.2f} s"),
        (
            f"{b['requests']} uploads at once: answered 200 and read right",
            f"{b['answered_200_and_read_7']} of {b['requests']} "
            f"({', '.join(f'{n} x {k}' for k, n in b['statuses'].items())})",
        ),
        ("those uploads' latency p50 / p99", f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f} ms"),
        (f"latency, one image, {s['requests']} sequential: p50 / p99", f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms"),
        (
            f"an ordinary upload beside {w['slow_clients']} slow clients",
            f"{ordinary['status']} in {ordinary['seconds']:.2f} s",
        ),
        ("what the slow clients got", ", ".join(f"{n} x {k}" for k, n in w["slow_clients_answered"].items())),
        (
            f"throughput, {c['clients']} concurrent clients, {c['requests']:,} requests",
            f"{c['requests_per_s']:.1f} req/s (p99 {c['p99_ms']:.0f} ms)",
        ),
        ("server RSS after the first prediction", f"{m['rss_before_mb']:.0f} MB"),
        (
            f"server RSS after {m['requests_in_all']:,} requests (peak)",
            f"{m['rss_after_mb']:.0f} MB ({m['peak_rss_after_mb']:.0f} MB); growth {m['rss_growth_mb']:+.1f} MB",
        ),
    ]


def print_table(r: dict) -> None:
    print(
        f"\nMeasured {r['date']} on {r['machine']['cpu']}, {r['machine']['cores']} cores, Python "
        f"{r['machine']['python']} (1-min load average before: {r['machine']['load_average_1min_before']}); "
        f"clients on the same machine.\n"
    )
    this = rows(r["this"])
    if "baseline" not in r:
        print(f"model: {r['this']['model']}\n\n| measure | value |\n|---|---|")
        for name, value in this:
            print(f"| {name} | {value} |")
        return
    base, t = r["baseline"], r["this"]
    ratios = {
        0: base["first_prediction_s"] / t["first_prediction_s"],
        8: base["memory"]["peak_rss_after_mb"] / t["memory"]["peak_rss_after_mb"],
    }
    print(
        f"| measure | baseline: {base['checkout']}, {Path(base['model']).name} "
        f"| this: {Path(t['model']).name} | ratio |"
    )
    print("|---|---|---|---|")
    for i, ((name, before), (_, after)) in enumerate(zip(rows(base), this)):
        ratio = f"{ratios[i]:.1f}x" if i in ratios else ""
        print(f"| {name} | {before} | {after} | {ratio} |")


if __name__ == "__main__":
    main()
