"""What a Ray cluster can have: its *declared* node types, read without asking it for nodes.

Design trade-off: an autoscaling cluster scaled to zero has no GPU node up, so sizing a sweep from the
nodes that happen to exist would refuse a GPU sweep that the cluster would happily scale for. The node
types are therefore read from what declares them — the autoscaler's config in the GCS, a launcher YAML
or RayCluster manifest named by ``ARVID_AUTOSCALING_CONFIG``, the launcher's
``~/ray_bootstrap_config.yaml`` on the head, or on KubeRay the RayCluster itself, read through the
Kubernetes API and converted by the same Ray function KubeRay's autoscaler uses. Only a local Ray this
process started (it cannot grow) is described by its live nodes; a cluster that declares nothing gives
its live nodes marked undeclared, and the pre-flight (``arvid_ray.preflight``) then warns, not refuses.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeType", "declared_node_types", "planned_node_types", "from_ray_cluster", "describe",
           "AUTOSCALING_CONFIG_ENV", "RAYCLUSTER_ENV", "RAYCLUSTER_NAMESPACE_ENV"]

log = logging.getLogger(__name__)

AUTOSCALING_CONFIG_ENV = "ARVID_AUTOSCALING_CONFIG"
RAYCLUSTER_ENV = "ARVID_RAYCLUSTER"  # KubeRay: this cluster's RayCluster name (cluster/kuberay manifests)
RAYCLUSTER_NAMESPACE_ENV = "ARVID_RAYCLUSTER_NAMESPACE"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int  # -1 = unbounded
    static: bool = False  # a node that exists (no autoscaler), not a type that can be launched
    declared: bool = True  # False: a live node of a cluster that declares none of its types (warn, not refuse)




# ------------------------------------------------------------------------------------------ sources
def _from_gcs() -> list[NodeType] | None:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - older Ray / no autoscaler v2: fall through to the YAML
        return None
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
            for g in config.node_group_configs]


def _from_autoscaling_config(data: dict) -> list[NodeType] | None:
    """Node types of an autoscaler config (launcher YAML, or what Ray derives from a RayCluster)."""
    types = (data or {}).get("available_node_types") or {}
    head = data.get("head_node_type")
    out = []
    for name, spec in types.items():
        count = 1 if name == head else int(spec.get("max_workers", data.get("max_workers", 0)))
        out.append(NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()}, count))
    return out or None


def from_ray_cluster(cr: dict) -> list[NodeType] | None:
    """Node types of a KubeRay RayCluster resource, through the conversion KubeRay's autoscaler itself
    runs (``_derive_autoscaling_config_from_ray_cr``): the head group, every worker group with its
    ``maxReplicas``, resources from ``rayStartParams`` and the containers' limits."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {**cr, "metadata": {"namespace": "default", **(cr.get("metadata") or {})}}
    return _from_autoscaling_config(_derive_autoscaling_config_from_ray_cr(cr))


def _from_yaml(path: str) -> list[NodeType] | None:
    """A launcher autoscaling YAML, or a RayCluster manifest (``kind: RayCluster``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError:
        return None
    if (data or {}).get("kind") == "RayCluster":
        return from_ray_cluster(data)
    return _from_autoscaling_config(data or {})


def _from_kuberay() -> list[NodeType] | None:
    """On a KubeRay pod: read this cluster's RayCluster through the Kubernetes API with the pod's service
    account (the manifests grant it ``get`` on rayclusters and name the cluster in ``ARVID_RAYCLUSTER``
    from the pod's ``ray.io/cluster`` label), as KubeRay's autoscaler does."""
    name = os.environ.get(RAYCLUSTER_ENV) or os.environ.get("RAY_CLUSTER_NAME")
    if not name:
        return None
    namespace = os.environ.get(RAYCLUSTER_NAMESPACE_ENV)
    if not namespace:
        try:
            namespace = Path(_SA_NAMESPACE).read_text().strip()
        except OSError:
            namespace = "default"
    try:
        from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

        cr = KubernetesHttpApiClient(namespace=namespace).get(f"rayclusters/{name}")
    except Exception as exc:  # noqa: BLE001 - no token, RBAC denies, API unreachable: say so, go on
        log.warning("could not read RayCluster %s/%s from the Kubernetes API (%s: %s); grant the head's "
                    "service account `get` on rayclusters (cluster/kuberay/raycluster.yaml does)", namespace,
                    name, exc.__class__.__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return None
    return from_ray_cluster(cr)


def _started_here() -> bool:
    """True when this process started its own local Ray (no autoscaler: its nodes are all it has)."""
    try:
        import ray

        node = ray._private.worker.global_worker.node
        return bool(node is not None and node.head)
    except Exception:  # noqa: BLE001
        return False


def _declared() -> list[NodeType] | None:
    """The first declared source that answers (see declared_node_types), or None."""
    found = _from_gcs()
    if found:
        return found
    for path in (os.environ.get(AUTOSCALING_CONFIG_ENV), "~/ray_bootstrap_config.yaml"):
        if path and (found := _from_yaml(path)):
            return found
    return _from_kuberay()


def declared_node_types() -> list[NodeType]:
    """The node types the cluster can have (Ray must be connected); see the module docstring.

    Sources, first found wins: the autoscaler's config in the GCS; ``ARVID_AUTOSCALING_CONFIG`` (a
    launcher YAML or a RayCluster manifest); the launcher's ``~/ray_bootstrap_config.yaml``; on KubeRay,
    the RayCluster read from the Kubernetes API. None of them on a cluster this process did not start:
    the live nodes, marked undeclared (the pre-flight then warns instead of refusing). A local Ray this
    process started: its nodes, static."""
    if found := _declared():
        return found
    import ray

    static = _started_here()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return [NodeType(n["NodeID"][:8], {k: float(v) for k, v in n["Resources"].items()}, 1, static=static,
                     declared=static) for n in nodes]


def planned_node_types(num_cpus: int | None = None) -> list[NodeType]:
    """The node types a dry run checks against, starting nothing: a declared source when one exists (no
    Ray needed); else, with ``RAY_ADDRESS``, the connected cluster's (connecting starts no work); else the
    local machine as the sweep start-up would start Ray on it (``num_cpus`` logical CPUs, its GPUs)."""
    if found := _declared():
        return found
    if os.environ.get("RAY_ADDRESS"):
        from arvid_ray import ray_session

        ray_session.connect(log_to_driver=False)  # RAY_ADDRESS is set: connects, starts no Ray
        return declared_node_types()
    import torch

    from arvid_ray.ray_session import local_cpus

    cpus = float(num_cpus or local_cpus())
    return [NodeType("local", {"CPU": cpus, "GPU": float(torch.cuda.device_count())}, 1, static=True)]


def describe(types: list[NodeType]) -> str:
    """One line naming each node type, its resources and how many the cluster may have."""
    return _describe(types)




def _describe(types: list[NodeType]) -> str:
    def res(r):
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(r.items())
                               if not k.startswith(("node:", "memory", "object_store"))) + "}"
    return "; ".join(f"{t.name} {res(t.resources)} x{'∞' if t.max_count < 0 else t.max_count}" for t in types)
