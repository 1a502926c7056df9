"""The Ray fleet on a real local cluster of two nodes: one host per node, placement, node loss."""

from __future__ import annotations

import time

import pytest

from tests.prereqs import require_module

ray = require_module("ray", install="pip install -e '.[ray]', as `make test` does")

from ray.cluster_utils import Cluster  # noqa: E402

from rockroll import SandboxClosed  # noqa: E402
from rockroll.service.fleet import Fleet  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.mark.slow
def test_two_nodes_place_run_and_report_a_lost_node(base_image: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    worker = cluster.add_node(**NODE)
    ray.init(address=cluster.address, namespace="rockroll-test", log_to_driver=False)
    fleet = None
    try:
        cluster.wait_for_nodes()
        fleet = Fleet(monitor_every=0.5)
        nodes = fleet.nodes()
        assert len(nodes) == 2
        boxes = [fleet.create(base_image, memory="256m") for _ in range(4)]
        placed = fleet.placement()
        per_node = {
            n: sum(1 for v in placed.values() if v == n) for n in {c.node_id for c in nodes}
        }
        assert sorted(per_node.values()) == [2, 2], per_node  # most free memory first
        # One host actor per node, whatever the number of sandboxes.
        hosts = [
            a for a in ray.util.list_named_actors(all_namespaces=True) if "rockroll-host" in str(a)
        ]
        assert len(hosts) == 2, hosts
        for i, sb in enumerate(boxes):
            assert sb.exec(f"echo {i} > /n; cat /n").stdout == f"{i}\n"
            sb.write_bytes("/blob", bytes(range(256)))
            assert sb.read_bytes("/blob") == bytes(range(256))
        on_worker = [sb for sb in boxes if sb.node_id == worker.node_id]
        on_head = [sb for sb in boxes if sb.node_id != worker.node_id]
        assert len(on_worker) == 2 and len(on_head) == 2

        cluster.remove_node(worker)
        deadline = time.monotonic() + 60
        while not all(fleet.status(sb.id)[0] == "lost" for sb in on_worker):
            assert time.monotonic() < deadline, fleet.lost()
            time.sleep(0.2)
        for sb in on_worker:
            state, why = fleet.status(sb.id)
            assert state == "lost" and why and worker.node_id[:12] in why
            with pytest.raises(SandboxClosed, match="was lost"):
                sb.exec("true")
        for sb in on_head:
            assert sb.exec("cat /n").exit_code == 0
        replacement = fleet.create(base_image, memory="256m")
        assert replacement.node_id != worker.node_id
        assert replacement.exec("true").exit_code == 0
        assert [c.node_id for c in fleet.nodes()] == [replacement.node_id]
    finally:
        if fleet is not None:
            fleet.shutdown()
        ray.shutdown()
        cluster.shutdown()
    from rockroll.sandbox.runtime import local_runtime

    local_runtime().gc()  # the lost node's sandboxes: their owner died with the node
