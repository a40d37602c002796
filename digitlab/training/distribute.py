"""Where training runs: one device, every local device, or several machines (`train.distribute`).

  none          the default device (a GPU if there is one, else the CPU)
  mirrored      synchronous data parallelism over every local GPU (or every logical CPU device)
  multi_worker  the same over the machines listed in the standard TF_CONFIG variable; each machine
                runs the same command with its own TF_CONFIG, and only the chief writes outputs

TF_CONFIG is checked here, before TensorFlow reads it, so that a mistake in it gives one line
that names the problem instead of a stack trace or a hang.
"""

import json
import os

from digitlab.shared.errors import UserError

import tensorflow as tf


def cluster_task() -> tuple[dict, str, int]:
    """The cluster, task type and task index of TF_CONFIG, checked; UserError says what is wrong."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError(
            "train.distribute is multi_worker but TF_CONFIG is not set; set it on every "
            'worker, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError('TF_CONFIG has no "cluster": give {"cluster": {"worker": ["host:port", ...]}, ...}')
    for role, addresses in cluster.items():
        if role not in ("chief", "worker") or not isinstance(addresses, list) or not addresses:
            raise UserError(
                f'TF_CONFIG cluster "{role}" must be "chief" or "worker" with a list of '
                f'"host:port" addresses, got {addresses!r}'
            )
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise UserError(f'TF_CONFIG cluster "{role}" address {address!r} is not "host:port"')
    if not isinstance(task, dict):
        raise UserError('TF_CONFIG has no "task": give {"task": {"type": "worker", "index": N}}, N this machine')
    role, index = task.get("type"), task.get("index")
    if role not in cluster:
        raise UserError(f"TF_CONFIG task type {role!r} is not in the cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[role]):
        raise UserError(
            f"TF_CONFIG task index {index!r} is not one of the {len(cluster[role])} "
            f'"{role}" addresses (0 to {len(cluster[role]) - 1})'
        )
    return cluster, role, index


def is_chief(distribute: str) -> bool:
    """Whether this process writes the model and reports: always, except on the other workers of a cluster."""
    if distribute != "multi_worker":
        return True
    cluster, role, index = cluster_task()
    return role == "chief" or ("chief" not in cluster and index == 0)


def strategy_for(distribute: str) -> tf.distribute.Strategy:
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    cluster_task()
    # A worker that dies stops sending heartbeats to TensorFlow's coordination service, which then
    # aborts the others' collective operations. (CommunicationOptions(timeout_seconds=...) would do
    # it too, but it starts a thread for every collective: benchmarks/README.md, "One training loop,
    # one device or many".)
    return tf.distribute.MultiWorkerMirroredStrategy()


def describe(strategy: tf.distribute.Strategy) -> str:
    """What training runs on, for the stage's first line of output."""
    devices = tf.config.list_physical_devices("GPU")
    hardware = f"{len(devices)} GPU(s)" if devices else "CPU"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec()
        workers = sum(spec.num_tasks(job) for job in spec.jobs)
        task = "the chief" if resolver.task_type == "chief" else f"worker {resolver.task_id}"
        return f"{hardware}, {task} of {workers} machines ({strategy.num_replicas_in_sync} replicas)"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"{hardware}, mirrored over {', '.join(strategy.extended.worker_devices)}"
    return f"{hardware}, one device"
