"""Benchmark of the draw-a-digit web app (digitlab/serving/app.py), as the real server process on 127.0.0.1.

It starts `python -m digitlab.serving.app` on a free port and measures, sending what the page sends (a
280x280 PNG of a drawn 7 as the multipart field `image`):

  first prediction    seconds from the process's start to its first successful /predict
                      (importing TensorFlow, loading and warming up the model, serving)
  latency             of one image, SEQUENTIAL requests one after another on one connection:
                      p50, p90, p99, max
  throughput          requests/s with CLIENTS concurrent clients (threads, one connection each),
                      CONCURRENT requests in all, and their p50 and p99 latency
  memory              the server's VmRSS and VmHWM (peak) from /proc/PID/status after the first
                      prediction and after TOTAL requests in all, and the growth between them

The clients run on the same machine and share its cores with the server, as in the figures
reported. Every request has a timeout and every phase a bounded count, so the run stops by itself
(about 3 minutes on 2 cores). Traffic goes to 127.0.0.1 only.

If data/model/model.keras does not exist yet (training elsewhere), it retries every minute for up to
10 minutes, then trains a stand-in on 12,000 MNIST images in a temporary folder and says so.

Usage: python benchmarks/app_benchmark.py [--model data/model/model.keras] [--output benchmarks/app_results.json]
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
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = 500
CLIENTS = 8
CONCURRENT = 2_000
TOTAL = 10_000  # requests in all before memory is read the second time
WARM_UP = 20
REQUEST_TIMEOUT_S = 30
START_TIMEOUT_S = 120
MODEL_WAIT_S, MODEL_RETRY_S = 600, 60
TARGETS = {"latency_p50_ms": 30, "first_prediction_s": 10}


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
    """A model trained on 12,000 MNIST images for 2 epochs (about 97% right), in a temporary folder.
    Without batch normalisation: with it, 2 short epochs leave its running statistics unsettled."""
    import digitlab.shared  # noqa: F401  (sets TensorFlow's environment first)
    from digitlab.data.raw import SHA256, load_split
    from digitlab.shared.params import Params, load_params, with_overrides
    from digitlab.shared.prepared import to_model_input
    from digitlab.training.fitting import fit

    folders = [os.environ.get("MNIST_MIRROR", ""), PROJECT_ROOT.parent / "shared" / "data" / "mnist",
               PROJECT_ROOT / "data" / "raw"]
    mirror = next((Path(f) for f in folders if f and all(Path(f, name).is_file() for name in SHA256)), None)
    if mirror is None:
        sys.exit("error: no model and no MNIST files to train a stand-in: set MNIST_MIRROR or run `dvc repro`")
    images, labels = load_split(mirror, "train")
    overrides = {"train.epochs": 2, "model.batch_norm": False}
    params = Params.model_validate(with_overrides(load_params(PROJECT_ROOT / "params.yaml").model_dump(), overrides))
    train = {"images": to_model_input(images[:12000]), "labels": labels[:12000]}
    val = {"images": to_model_input(images[-1000:]), "labels": labels[-1000:]}
    path = Path(tempfile.mkdtemp(prefix="app-benchmark-")) / "model.keras"
    fit(params, train, val).save(path)
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


def ms(seconds: np.ndarray, q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "data" / "model" / "model.keras")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "app_results.json")
    args = parser.parse_args()
    model, model_note = find_model(args.model)
    png = drawn_seven()
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "server.log", "wb") as log:
        command = [sys.executable, "-m", "digitlab.serving.app", "--port", str(port), "--model", str(model)]
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            first_prediction_s, digit = wait_for_first_prediction(url, png, process, started)
            print(f"first prediction after {first_prediction_s:.2f} s: {digit}", flush=True)
            sequential(url, png, WARM_UP)
            memory_before = memory_kb(process.pid)
            one_by_one = sequential(url, png, SEQUENTIAL)
            print(f"sequential: p50 {ms(one_by_one, 50)} ms", flush=True)
            loaded, wall = concurrent(url, png, CONCURRENT, CLIENTS)
            print(f"{CLIENTS} clients: {CONCURRENT / wall:.1f} requests/s", flush=True)
            # The rest of the TOTAL, in two halves: RSS read in between tells a plateau from a steady leak.
            sent = 1 + WARM_UP + SEQUENTIAL + CONCURRENT
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

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "load_average_1min_before": round(load_before, 2)},
        "model": model_note,
        "digit_read": digit,
        "first_prediction_s": round(first_prediction_s, 2),
        "sequential": {"requests": SEQUENTIAL, "p50_ms": ms(one_by_one, 50), "p90_ms": ms(one_by_one, 90),
                       "p99_ms": ms(one_by_one, 99), "max_ms": round(float(one_by_one.max()) * 1000, 2),
                       "mean_ms": round(float(one_by_one.mean()) * 1000, 2)},
        "concurrent": {"clients": CLIENTS, "requests": CONCURRENT, "wall_s": round(wall, 2),
                       "requests_per_s": round(CONCURRENT / wall, 1), "p50_ms": ms(loaded, 50),
                       "p99_ms": ms(loaded, 99)},
        "memory": {"requests_in_all": TOTAL, "rss_before_mb": round(memory_before["VmRSS"] / 1024, 1),
                   "rss_after_mb": round(memory_after["VmRSS"] / 1024, 1),
                   "rss_growth_mb": round((memory_after["VmRSS"] - memory_before["VmRSS"]) / 1024, 1),
                   "peak_rss_before_mb": round(memory_before["VmHWM"] / 1024, 1),
                   "peak_rss_after_mb": round(memory_after["VmHWM"] / 1024, 1),
                   "rss_mb_after_requests": {count: round(kb / 1024, 1) for count, kb in rss_by_requests.items()}},
        "targets": TARGETS,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(r: dict) -> None:
    s, c, m = r["sequential"], r["concurrent"], r["memory"]
    met = {True: "met", False: "MISSED"}
    rows = [
        ("first prediction after process start", f"{r['first_prediction_s']:.2f} s",
         f"<= {TARGETS['first_prediction_s']} s: {met[r['first_prediction_s'] <= TARGETS['first_prediction_s']]}"),
        (f"latency, one image, {s['requests']} sequential: p50", f"{s['p50_ms']:.1f} ms",
         f"<= {TARGETS['latency_p50_ms']} ms: {met[s['p50_ms'] <= TARGETS['latency_p50_ms']]}"),
        ("latency p90 / p99 / max", f"{s['p90_ms']:.1f} / {s['p99_ms']:.1f} / {s['max_ms']:.1f} ms", ""),
        (f"throughput, {c['clients']} concurrent clients, {c['requests']:,} requests",
         f"{c['requests_per_s']:.1f} req/s", ""),
        ("latency under that load: p50 / p99", f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms", ""),
        ("server RSS after the first prediction", f"{m['rss_before_mb']:.1f} MB",
         f"peak {m['peak_rss_before_mb']:.1f} MB"),
        (f"server RSS after {m['requests_in_all']:,} requests", f"{m['rss_after_mb']:.1f} MB",
         f"peak {m['peak_rss_after_mb']:.1f} MB; growth {m['rss_growth_mb']:+.1f} MB"),
        ("server RSS along the way", "", ", ".join(f"{mb:.1f} MB after {count:,}"
                                                   for count, mb in m["rss_mb_after_requests"].items())),
    ]
    print(f"\nMeasured {r['date']} on {r['machine']['cpu']}, {r['machine']['cores']} cores, Python "
          f"{r['machine']['python']} (1-min load average before: {r['machine']['load_average_1min_before']}); "
          f"model: {r['model']}; clients on the same machine.\n")
    print("| measure | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
