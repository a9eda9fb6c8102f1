"""Scale benchmark of the sandbox cluster (a Kubernetes API emulator for tests and demos).

Creates N custom objects through the official `kubernetes` client while a watch
is open, and reports requests per second and watch-event latency (create sent ->
ADDED event received). Not a timed test: run it by hand.

    .venv/bin/python benchmarks/sandbox_scale.py --objects 1000 [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sandbox"))

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402

from kwatt_sandbox.testing import running_sandbox  # noqa: E402

GROUP, VERSION, PLURAL = "example.kwatt.dev", "v1", "widgets"
CRD = ROOT / "tests" / "sandbox" / "manifests" / "widget-crd.yaml"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000, help="custom objects to create")
    parser.add_argument("--threads", type=int, default=1, help="concurrent client threads")
    args = parser.parse_args()
    with running_sandbox() as sb:
        sb.create(yaml.safe_load(CRD.read_text()))
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(sb.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = max(4, args.threads * 2)
        api = client.ApiClient(configuration)
        custom = client.CustomObjectsApi(api)
        sent: dict[str, float] = {}
        received: dict[str, float] = {}
        done = threading.Event()
        start_rv = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)[
            "metadata"
        ]["resourceVersion"]
        resp = custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            watch=True,
            resource_version=start_rv,
            timeout_seconds=600,
            _preload_content=False,
        )

        def watcher() -> None:
            buffer = b""
            for chunk in resp.stream(65536, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event: dict[str, Any] = json.loads(line)
                    if event["type"] == "ADDED":
                        received[event["object"]["metadata"]["name"]] = time.perf_counter()
                        if len(received) >= args.objects:
                            done.set()
                            return

        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()

        def create(i: int) -> None:
            name = f"w-{i:05d}"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Widget",
                "metadata": {"name": name, "labels": {"bench": "yes"}},
                "spec": {"size": 1 + i % 10, "tags": ["a", "b"]},
            }
            sent[name] = time.perf_counter()
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            list(pool.map(create, range(args.objects)))
        elapsed = time.perf_counter() - began
        done.wait(60)
        resp.release_conn()
        latencies = [(received[n] - sent[n]) * 1000 for n in sent if n in received]
        listed = time.perf_counter()
        items = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]
        list_ms = (time.perf_counter() - listed) * 1000
        api.close()
    print(f"sandbox scale benchmark ({args.objects} objects, {args.threads} client thread(s))")
    print(f"{'metric':<34}{'value':>12}")
    print(f"{'create requests/s':<34}{args.objects / elapsed:>12.1f}")
    print(f"{'watch events received':<34}{len(latencies):>12d}")
    if latencies:
        print(f"{'watch latency p50 (ms)':<34}{statistics.median(latencies):>12.2f}")
        print(f"{'watch latency p99 (ms)':<34}{_percentile(latencies, 0.99):>12.2f}")
        print(f"{'watch latency max (ms)':<34}{max(latencies):>12.2f}")
    print(f"{'list of all objects (ms)':<34}{list_ms:>12.1f}")
    print(f"{'objects listed':<34}{len(items):>12d}")
    return 0 if len(latencies) == args.objects else 1


if __name__ == "__main__":
    sys.exit(main())
