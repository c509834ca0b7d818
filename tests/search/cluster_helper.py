"""A real multi-node Ray cluster on 127.0.0.1 (Ray's ``cluster_utils.Cluster``: a head and a worker node, 1 CPU
each), in its own process so the test process's Ray stays untouched. Prints one JSON line
({"address", "head", "worker"}), then obeys stdin: ``kill-worker`` removes the worker node ungracefully
(its raylet and workers are killed, as when a machine dies), ``stop`` (or EOF) shuts the cluster down."""
import json
import os
import sys

# Ray's single-machine mode: every server binds to 127.0.0.1 and a "127.0.0.1" address is not rewritten to
# the machine's outward IP; Cluster adds its nodes in-process, so several nodes still join one cluster
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from ray.cluster_utils import Cluster  # noqa: E402


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id, "worker": worker.node_id}),
          flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill-worker":
                cluster.remove_node(worker, allow_graceful=False)
                print("killed", flush=True)
            elif line.strip() == "stop":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
