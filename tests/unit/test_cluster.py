"""Every file under cluster/ is checked against the schema of the tool that will read it.

Launcher YAMLs: Ray's own `ray/autoscaler/ray-schema.json` and Ray's config preparation; AWS node configs
also against botocore's EC2 RunInstances model (the launcher passes them to boto3 verbatim). KubeRay
manifests: the RayCluster/RayJob CRD openAPIV3Schema vendored in tests/data/crds (see SOURCE.md there).
Schema validation lets unknown keys through (node_config is free-form, CRDs prune silently), so each
check also walks the file and requires every key it sets to be a known property. The head start command
is run for real: the MLflow server it starts must answer on 127.0.0.1 and on the head's private address
and store artifacts in S3 (a moto server here).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cluster_shared import (
    CLUSTER,
    CRDS,
    ENTRY,
    IMAGE_ROOT,
    K8S_METADATA,
    KUBERAY,
    LAUNCHERS,
    ROOT,
    _commands,
    _load,
)


def _ray_schema() -> dict:
    spec = importlib.util.find_spec("ray")  # locate the installed Ray without importing it
    assert spec and spec.submodule_search_locations, "ray is not installed"
    return json.loads((Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json").read_text())


@functools.cache
def _crd_schema(name: str) -> dict:
    crd = _load(CRDS / name)
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def unknown_keys(node, schema: dict, path: str = "") -> list[str]:
    """Dotted paths of keys in ``node`` that an OpenAPI/JSON schema does not declare."""
    found: list[str] = []
    if isinstance(node, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and not isinstance(extra, dict):
            return found  # a free-form object (e.g. a CRD's metadata or preserve-unknown-fields)
        for key, value in node.items():
            if props is not None and key in props:
                found += unknown_keys(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_keys(value, extra, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += unknown_keys(item, schema.get("items", {}), f"{path}[{i}]")
    return found


def unknown_boto_keys(node, shape, path: str = "") -> list[str]:
    """Keys (and enum values) in ``node`` that a botocore input shape rejects."""
    found: list[str] = []
    if shape.type_name == "structure":
        if not isinstance(node, dict):
            return [f"{path} (expected a mapping)"]
        for key, value in node.items():
            if key not in shape.members:
                found.append(f"{path}.{key}")
            else:
                found += unknown_boto_keys(value, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list":
        for i, item in enumerate(node if isinstance(node, list) else [node]):
            found += unknown_boto_keys(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "string" and shape.enum and node not in shape.enum:
        found.append(f"{path}={node!r} (allowed: {', '.join(shape.enum)})")
    return found


def _launcher_problems(cfg: dict) -> list[str]:
    """Schema errors plus keys the schema would let through: provider keys and AWS node_config keys."""
    import jsonschema

    schema = _ray_schema()
    problems = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(cfg)]
    known_provider = set(schema["properties"]["provider"]["properties"])
    problems += [f"provider.{k}" for k in cfg.get("provider", {}) if k not in known_provider]
    if cfg.get("provider", {}).get("type") == "aws":
        import botocore.session

        run_instances = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances")
        for name, node_type in cfg.get("available_node_types", {}).items():
            problems += unknown_boto_keys(node_type.get("node_config", {}), run_instances.input_shape,
                                          f"available_node_types.{name}.node_config")
    return problems


def _kuberay_problems(manifest: dict, crd: str) -> list[str]:
    import jsonschema

    schema = _crd_schema(crd)
    problems = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(manifest)]
    problems += unknown_keys({k: v for k, v in manifest.items() if k != "metadata"}, schema)
    problems += [f".metadata.{k}" for k in manifest.get("metadata", {}) if k not in K8S_METADATA]
    return problems


# ------------------------------------------------------------------------------------- launcher
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_is_valid_for_ray(name):
    cfg = _load(CLUSTER / name)
    assert _launcher_problems(cfg) == []
    # Ray's own preparation (defaults merged, node types cross-checked), as `ray up` does before any cloud call.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_misspelled_keys_are_caught(name):
    cfg = _load(CLUSTER / name)
    cfg["provider"]["availabilty_zone"] = cfg["provider"].pop("availability_zone")  # typo: passes the schema
    problems = _launcher_problems(cfg)
    assert "provider.availabilty_zone" in problems
    if cfg["provider"]["type"] == "aws":
        node = cfg["available_node_types"]["gpu_a10g_spot"]["node_config"]
        node["InstanceMarketOption"] = node.pop("InstanceMarketOptions")
        node["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] = "gp9"
        problems = _launcher_problems(cfg)
        assert "available_node_types.gpu_a10g_spot.node_config.InstanceMarketOption" in problems
        assert any("VolumeType='gp9'" in p for p in problems)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_topology_cpu_head_autoscaling_spot_gpus(name):
    cfg = _load(CLUSTER / name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert len(gpu_types) >= 2
    for node_name, t in gpu_types.items():
        assert t["min_workers"] == 0 and t["max_workers"] > 0, node_name
        assert t["max_workers"] <= cfg["max_workers"]
    spot = [n for n, t in gpu_types.items() if _is_spot(t["node_config"])]
    assert spot and all(n.endswith("_spot") for n in spot), "spot node types are named *_spot"
    assert all(_is_spot(t["node_config"]) for n, t in gpu_types.items() if n.endswith("_spot"))


def _is_spot(node_config: dict) -> bool:
    aws = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    sched = node_config.get("scheduling", {})
    gcp = sched.get("provisioningModel") == "SPOT" or sched.get("preemptible") is True
    return aws or gcp


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_only_ssh_is_public(name):
    cfg = _load(CLUSTER / name)
    head_start = _commands(cfg, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start
    assert re.search(r"mlflow server[^;]*--host 127\.0\.0\.1", head_start)
    # the second bind is the private address only (hostname -I on the head), never 0.0.0.0
    assert "0.0.0.0" not in yaml.safe_dump(cfg)
    if cfg["provider"]["type"] == "aws":
        # Ray's security group admits SSH + intra-cluster traffic; extra IpPermissions would open more.
        assert "IpPermissions" not in cfg["provider"].get("security_group", {})
    else:
        for t in cfg["available_node_types"].values():
            (nic,) = t["node_config"]["networkInterfaces"]
            assert nic["subnetwork"].endswith("/subnetworks/arvid-ray-subnet")
        readme = (CLUSTER / "README.md").read_text()
        assert "firewall-rules create arvid-ray-allow-ssh" in readme and "--allow=tcp:22" in readme


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_runs_the_project_image_and_shares_storage(name):
    """Every node runs the image cluster/Dockerfile builds (pinned, identical on head and workers); nothing
    is pip-installed at boot; the storage root is set once for every node; trial drivers stay on the head."""
    cfg = _load(CLUSTER / name)
    scheme = "s3://" if cfg["provider"]["type"] == "aws" else "gs://"
    tag = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", (CLUSTER / "Dockerfile").read_text()).group(1)
    assert cfg["docker"]["image"].endswith("/" + tag) and "head_image" not in cfg["docker"]
    assert "worker_image" not in cfg["docker"]
    everything = "\n".join(_commands(cfg, k) for k in ("initialization_commands", "setup_commands",
                                                       "head_setup_commands", "worker_setup_commands",
                                                       "head_start_ray_commands", "worker_start_ray_commands"))
    assert "pip install" not in everything and "uv " not in everything, "install in the image, not at boot"
    setup = _commands(cfg, "setup_commands")
    storage = re.search(r"ARVID_STORAGE=(\S+)", setup)
    assert storage and storage.group(1).startswith(scheme)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("arvid_driver", 0) > 0  # preflight pins trial drivers to this resource
    assert all("arvid_driver" not in t["resources"] for n, t in cfg["available_node_types"].items()
               if n != cfg["head_node_type"])
    head_start = _commands(cfg, "head_start_ray_commands")
    assert "--artifacts-destination $ARVID_STORAGE/" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start  # preflight reads node types there
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "export MLFLOW_TRACKING_URI=http://$" in _commands(cfg, key)
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert '"torch==2.13.0+cu' in dockerfile and '-c requirements.lock ".[cluster]"' in dockerfile
    pins = _lock_pins()
    assert pins["torch"] == "2.13.0" and pins["ray"] == _image_ray_version() and pins["mlflow"].startswith("3.")


def _lock_pins() -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", (ROOT / "requirements.lock").read_text(), flags=re.M))


def _image_ray_version() -> str:
    return re.search(r"^FROM rayproject/ray:([\d.]+)-", (CLUSTER / "Dockerfile").read_text(), flags=re.M).group(1)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_requires_the_ray_auth_token_everywhere(name):
    cfg = _load(CLUSTER / name)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the same token on every node
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in cfg[key] if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start.split("ray start")[0], key
    readme = (CLUSTER / "README.md").read_text()
    assert "ray get-auth-token --generate" in readme and "export RAY_AUTH_MODE=token" in readme


def test_both_clouds_run_the_same_software():
    aws, gcp = (_load(CLUSTER / n) for n in LAUNCHERS)
    strip = re.compile(r"(boto3|google-cloud-storage)")
    for key in ("head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert strip.sub("", _commands(aws, key)) == strip.sub("", _commands(gcp, key)), key
    assert aws["docker"] == gcp["docker"]
    pins = {_lock_pins()["ray"], _image_ray_version()}
    for name in KUBERAY:
        manifest = _load(CLUSTER / "kuberay" / name)
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        pins.add(spec["rayVersion"])
    assert len(pins) == 1, f"one Ray version everywhere, found {pins}"


# ------------------------------------------------------------------------------------- KubeRay
@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifest_matches_crd(name):
    manifest = _load(CLUSTER / "kuberay" / name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert _kuberay_problems(manifest, KUBERAY[name]) == []


def test_kuberay_misspelled_keys_pass_the_crd_but_are_caught():
    import jsonschema

    manifest = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    manifest["spec"]["enableInTreeAutoscalling"] = manifest["spec"].pop("enableInTreeAutoscaling")
    container = manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = container.pop("imagePullPolicy")
    schema = _crd_schema("ray.io_rayclusters.yaml")
    jsonschema.Draft7Validator(schema).validate(manifest)  # the CRD schema alone lets both through
    problems = _kuberay_problems(manifest, "ray.io_rayclusters.yaml")
    assert ".spec.enableInTreeAutoscalling" in problems
    assert ".spec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicyy" in problems


def test_kuberay_groups_autoscale_from_zero_gpus():
    for name in KUBERAY:
        spec = _load(CLUSTER / "kuberay" / name)["spec"]
        spec = spec.get("rayClusterSpec", spec)
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["authOptions"]["mode"] == "token"
        head = spec["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP"
        assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
        (gpu,) = spec["workerGroupSpecs"]
        assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 0
        assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_mlflow_service_is_cluster_internal_and_matches_the_ray_pods():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text()))
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(by) == {("PersistentVolumeClaim", "arvid-ray-mlflow-db"), ("Deployment", "arvid-ray-mlflow-db"),
                       ("Service", "arvid-ray-mlflow-db"), ("Deployment", "arvid-ray-mlflow"),
                       ("Service", "arvid-ray-mlflow")}
    for name in ("arvid-ray-mlflow", "arvid-ray-mlflow-db"):  # both inside the cluster, each behind its Service
        service, pod = by[("Service", name)], by[("Deployment", name)]["spec"]["template"]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    db_pod = by[("Deployment", "arvid-ray-mlflow-db")]["spec"]["template"]["spec"]
    assert db_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "arvid-ray-mlflow-db"  # data on the volume
    db_env = {e["name"]: e for e in db_pod["containers"][0]["env"]}
    assert "secretKeyRef" in db_env["POSTGRES_PASSWORD"]["valueFrom"]  # no password in the manifest
    service = by[("Service", "arvid-ray-mlflow")]
    container = by[("Deployment", "arvid-ray-mlflow")]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    db = next(a for a in args if a.startswith("--backend-store-uri=")).split("=", 1)[1]
    db_port = by[("Service", "arvid-ray-mlflow-db")]["spec"]["ports"][0]["port"]
    user = db_env["POSTGRES_USER"]["value"]
    assert db == f"postgresql+psycopg2://{user}:$(MLFLOW_DB_PASSWORD)@arvid-ray-mlflow-db:{db_port}/{db_env['POSTGRES_DB']['value']}"
    assert {e["name"] for e in container["env"]} >= {"MLFLOW_DB_PASSWORD"}  # k8s expands $(VAR) in args
    assert any(a.startswith("--artifacts-destination=s3://") for a in args)
    uri = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert uri.removeprefix("http://") in allowed
    for name in KUBERAY:  # every Ray container and the job's runtime env point at that service
        manifest = _load(CLUSTER / "kuberay" / name)
        for container in _containers(manifest):
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["MLFLOW_TRACKING_URI"] == uri, name
        if "runtimeEnvYAML" in manifest["spec"]:
            runtime_env = yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])
            assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == uri


# ------------------------------------------------------------------------------- file references
def test_entrypoint_paths_are_real_and_agree_with_the_readme():
    """README's `ray job submit` line, the RayJob entrypoint and the repository name the same files."""
    readme = (CLUSTER / "README.md").read_text()
    assert (f"ray job submit --address http://127.0.0.1:8265 --working-dir . -- python {ENTRY} --config"
            in readme.replace("\\\n", " ").replace("  ", " "))
    job = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1] == IMAGE_ROOT + ENTRY
    config = argv[argv.index("--config") + 1]
    assert config.startswith(IMAGE_ROOT) and (ROOT / config.removeprefix(IMAGE_ROOT)).is_file()
    # every experiments/configs/... file the README or the cluster files name exists
    texts = [readme] + [p.read_text() for p in CLUSTER.rglob("*.yaml")]
    for ref in set(re.findall(r"experiments/configs/[\w./-]+\.yaml", "\n".join(texts))):
        assert (ROOT / ref).is_file(), ref
    assert (ROOT / ENTRY).is_file(), f"README and rayjob.yaml run {ENTRY}, which does not exist"


def test_dockerfile_copies_what_the_manifests_run():
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"WORKDIR {IMAGE_ROOT.rstrip('/')}" in text
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M)
    sources = [s for line in copied for s in line.split()]
    assert "experiments" in sources and "arvid_ray" in sources and "pyproject.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"cluster/Dockerfile copies {src}, which is not in the repository"
    images = {c["image"] for name in KUBERAY for c in _containers(_load(CLUSTER / "kuberay" / name))}
    tag = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", text).group(1)
    assert images == {tag}


def _containers(manifest: dict):
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        yield from group["template"]["spec"]["containers"]


# --------------------------------------------------------------- KubeRay: node types, identity, scheduling
def _ray_cluster(name: str) -> dict:
    """The RayCluster a manifest makes (a RayJob's rayClusterSpec), as the Kubernetes API returns it."""
    manifest = _load(CLUSTER / "kuberay" / name)
    if manifest["kind"] == "RayJob":
        manifest = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                    "metadata": {"name": manifest["metadata"]["name"] + "-abcde"},
                    "spec": manifest["spec"]["rayClusterSpec"]}
    return {**manifest, "metadata": {**manifest["metadata"], "namespace": "research"}}


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_node_types_come_from_the_raycluster_through_rays_conversion(name, monkeypatch):
    """The shipped manifests through Ray's own RayCluster → autoscaler-config conversion (what KubeRay's
    autoscaler runs) give the pre-flight its node types: the GPU group, its maxReplicas, the driver
    resource on the head; read on the head pod through the Kubernetes API with the pod's account."""
    from ray.autoscaler._private.kuberay import node_provider

    from arvid_ray import node_types, preflight
    from arvid_ray.config import load_config

    cr = _ray_cluster(name)
    (group,) = cr["spec"]["workerGroupSpecs"]
    asked = []

    def api_get(self, path):  # the Kubernetes API answering the head pod's GET
        asked.append((self._namespace, path))
        return cr

    monkeypatch.setattr(node_provider.KubernetesHttpApiClient, "get", api_get)
    for var in (preflight.AUTOSCALING_CONFIG_ENV, "RAY_CLUSTER_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no launcher bootstrap config here
    monkeypatch.setattr(node_types, "_from_gcs", lambda: None)
    # the pods' env names their RayCluster (downward API, the ray.io/cluster label) and namespace
    env = {e["name"]: e for e in cr["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[preflight.RAYCLUSTER_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['ray.io/cluster']"
    assert env[preflight.RAYCLUSTER_NAMESPACE_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    monkeypatch.setenv(preflight.RAYCLUSTER_ENV, cr["metadata"]["name"])
    monkeypatch.setenv(preflight.RAYCLUSTER_NAMESPACE_ENV, "research")
    types = {t.name: t for t in preflight.declared_node_types()}
    assert asked == [("research", f"rayclusters/{cr['metadata']['name']}")]
    gpu = types[group["groupName"]]
    assert gpu.resources["GPU"] == 1.0 and gpu.max_count == group["maxReplicas"] and gpu.declared
    assert types["headgroup"].resources.get("GPU", 0) == 0 and preflight.DRIVER_RESOURCE in types["headgroup"].resources
    # the dataset config the manifests run (8 GPU workers) fits; one more worker does not
    argv = shlex.split(_load(CLUSTER / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"])
    cfg = load_config(ROOT / argv[argv.index("--config") + 1].removeprefix(IMAGE_ROOT))
    assert cfg.train.use_gpu and cfg.train.num_workers <= group["maxReplicas"]
    preflight.check_resources(cfg, list(types.values()))
    with pytest.raises(preflight.PreflightError, match=f"room for {group['maxReplicas']}"):
        preflight.check_resources(cfg.replace(**{"train.num_workers": group["maxReplicas"] + 1}), list(types.values()))
    assert preflight.driver_resources(cfg, list(types.values())) == {preflight.DRIVER_RESOURCE: 0.001}
    if name == "raycluster.yaml":  # the manifest itself named by ARVID_AUTOSCALING_CONFIG: the same types
        monkeypatch.delenv(preflight.RAYCLUSTER_ENV)
        monkeypatch.setenv(preflight.AUTOSCALING_CONFIG_ENV, str(CLUSTER / "kuberay" / name))
        assert {t.name: t for t in preflight.declared_node_types()} == types and len(asked) == 1


def test_kuberay_without_a_readable_raycluster_warns_and_leaves_it_to_the_autoscaler(monkeypatch, caplog):
    """RBAC denies the read (or no source at all): the pre-flight says so and does not refuse a GPU sweep
    that the head's live nodes cannot host; the bounded resource wait decides."""
    import requests
    from ray.autoscaler._private.kuberay import node_provider

    from arvid_ray import node_types, preflight
    from arvid_ray.config import ExperimentConfig

    def denied(self, path):
        raise requests.HTTPError("403 Forbidden: rayclusters.ray.io is forbidden")

    monkeypatch.setattr(node_provider.KubernetesHttpApiClient, "get", denied)
    monkeypatch.setenv(preflight.RAYCLUSTER_ENV, "arvid-ray")
    with caplog.at_level("WARNING"):
        assert node_types._from_kuberay() is None
    assert "get` on rayclusters" in caplog.text
    live = [preflight.NodeType("head", {"CPU": 7.0}, 1, static=False, declared=False)]
    cfg = ExperimentConfig.from_flat({"train.use_gpu": True, "train.num_workers": 2})
    with caplog.at_level("WARNING"):
        assert preflight.check_resources(cfg, live) == live
    assert "declares no node types" in caplog.text and "train.resource_timeout_s" in caplog.text
    assert preflight.driver_resources(cfg, live) == {"node:__internal_head__": 0.001}
    with pytest.raises(preflight.PreflightError, match="no node type of this cluster has a GPU"):
        preflight.check_resources(cfg, [preflight.NodeType("local", {"CPU": 4.0}, 1, static=True)])


# --------------------------------------------------------------- identity, registry, CUDA, scheduling
def _worker_types(cfg: dict) -> dict:
    return {n: t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]}


def test_launcher_workers_have_their_own_identity_and_every_node_logs_in_to_the_registry():
    """Workers do not run with the head's role (AWS: Ray's ray-autoscaler-v1 profile, EC2 + S3 full
    access; GCP: Ray attaches its service account to the head only, so workers need one of their own);
    registry login runs in initialization_commands, i.e. on every new node before the image is pulled."""
    aws, gcp = _load(CLUSTER / "aws.yaml"), _load(CLUSTER / "gcp.yaml")
    head_profile = aws["available_node_types"][aws["head_node_type"]]["node_config"].get("IamInstanceProfile")
    for name, t in _worker_types(aws).items():
        profile = t["node_config"].get("IamInstanceProfile", {}).get("Name")
        assert profile and profile != "ray-autoscaler-v1" and profile != (head_profile or {}).get("Name"), name
    for name, t in _worker_types(gcp).items():
        (account,) = t["node_config"]["serviceAccounts"]
        assert account["email"].startswith("arvid-ray-worker@"), name
    readme = (CLUSTER / "README.md").read_text()
    assert "arvid-ray-worker" in readme and "iam:PassRole" in readme
    init_aws, init_gcp = _commands(aws, "initialization_commands"), _commands(gcp, "initialization_commands")
    assert "aws ecr get-login-password" in init_aws and "docker --config $HOME/.docker login" in init_aws
    assert "gcloud auth configure-docker" in init_gcp
    for cfg in (aws, gcp):  # the login names the registry of the image the nodes pull
        assert "YOUR-REGISTRY/arvid-ray" in _commands(cfg, "initialization_commands")
        assert cfg["docker"]["image"].startswith("YOUR-REGISTRY/arvid-ray:")


def test_launcher_mlflow_database_outlives_the_container():
    """Ray runs the node's container with --rm: the head's PostgreSQL directory is a host mount."""
    for name in LAUNCHERS:
        cfg = _load(CLUSTER / name)
        mounts = [o for o in cfg["docker"].get("head_run_options", []) if o.startswith("-v ")]
        ssh_home = f"/home/{cfg['auth']['ssh_user']}/mlflow"
        assert f"-v {ssh_home}:/home/ray/mlflow" in mounts, name
        assert "~/mlflow/pg" in _commands(cfg, "head_start_ray_commands")
        assert "mkdir -p ~/mlflow" in _commands(cfg, "initialization_commands")


def _torch_cuda_build() -> str:
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if "pip install" in ln and "torch==" in ln]
    index = re.search(r"--index-url https://download.pytorch.org/whl/cu(\d+)", line).group(1)
    local = re.search(r'"torch==([\d.]+)\+cu(\d+)"', line)
    assert local and local.group(1) == _lock_pins()["torch"] and local.group(2) == index, line
    return f"{index[:-1]}.{index[-1]}"  # cu128 -> 12.8


def test_cuda_contract_image_build_and_node_drivers_agree():
    """The image's torch is a CUDA build chosen on purpose (cu128, not PyPI's CUDA 13 wheel), every GPU
    image the launcher boots has a driver new enough for it, and every GPU node runs the start-up check."""
    from arvid_ray.cuda_check import min_driver

    cuda = _torch_cuda_build()
    assert cuda.startswith("12."), "PyPI's torch 2.13.0 is CUDA 13 (driver >= 580); the GPU images run 570"
    floor = min_driver(cuda)
    gcp = _load(CLUSTER / "gcp.yaml")
    for name, t in _worker_types(gcp).items():
        image = t["node_config"]["disks"][0]["initializeParams"]["sourceImage"]
        driver = int(re.search(r"nvidia-(\d+)$", image).group(1))
        assert (driver,) >= floor[:1], (name, image, floor)
        assert re.search(r"-cu(\d+)-", image).group(1)[:2] == cuda.split(".")[0], image
    aws = _load(CLUSTER / "aws.yaml")
    for name, t in _worker_types(aws).items():  # the DLAMI ships the driver; its version is not in its name
        assert "nvidia-driver" in t["node_config"]["ImageId"], name
    for name in LAUNCHERS:
        assert "python -m arvid_ray.cuda_check" in _commands(_load(CLUSTER / name), "worker_start_ray_commands")
    for name in KUBERAY:
        spec = _load(CLUSTER / "kuberay" / name)["spec"]
        spec = spec.get("rayClusterSpec", spec)
        for group in spec["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            assert container["lifecycle"]["postStart"]["exec"]["command"] == ["python", "-m", "arvid_ray.cuda_check"]


def test_cuda_check_fails_with_one_clear_line():
    from arvid_ray.cuda_check import verdict

    ok, line = verdict("2.13.0+cu128", "12.8", "570.133.20", 1)
    assert ok and line.startswith("cuda ok")
    for args, words in ((("2.13.0", "13.0", "570.133.20", 1), "older than 580"),
                        (("2.13.0+cu128", "12.8", None, 0), "no NVIDIA driver"),
                        (("2.13.0+cu128", "12.8", "570.133.20", 0), "sees no GPU"),
                        (("2.13.0+cpu", None, None, 0), "CPU-only build")):
        ok, line = verdict(*args)
        assert not ok and words in line and "\n" not in line and line.startswith("arvid-ray: GPU node unusable")
    # for real on this machine (CPU-only torch, no driver): exit 1, one line on stderr
    out = subprocess.run([sys.executable, "-m", "arvid_ray.cuda_check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("arvid-ray: GPU node unusable") and not out.stdout


def _node_shapes() -> dict[str, dict[str, float]]:
    """cluster/README.md's node-pool table: pool -> {cpu, memory GiB, gpu}."""
    text = (CLUSTER / "README.md").read_text()
    out = {}
    for pool, shape in re.findall(r"^\| (head|gpu)[^|]*\|[^|]*\|[^|]*\| ([^|]+) \|$", text, flags=re.M):
        cpu = float(re.search(r"(\d+) vCPU", shape).group(1))
        mem = float(re.search(r"(\d+) GiB", shape).group(1))
        gpu = re.search(r"(\d+) GPU", shape)
        out[pool] = {"cpu": cpu, "memory": mem, "gpu": float(gpu.group(1)) if gpu else 0.0}
    return out


def _quantity_gib(q: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}
    for unit, factor in units.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q) / 2**30


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_pods_schedule_on_the_documented_nodes_and_the_head_avoids_spot(name):
    """Requests fit the README's node shapes after the kubelet's and daemonsets' reserve (0.5 vCPU,
    4 GiB kept free); the head has a required node affinity excluding spot/preemptible capacity; pods
    run with the ServiceAccounts of serviceaccounts.yaml, the head's able to read RayClusters."""
    shapes = _node_shapes()
    assert set(shapes) == {"head", "gpu"} and shapes["gpu"]["gpu"] == 1
    spec = _load(CLUSTER / "kuberay" / name)["spec"]
    spec = spec.get("rayClusterSpec", spec)
    (gpu_group,) = spec["workerGroupSpecs"]
    groups = {"head": spec["headGroupSpec"], "gpu": gpu_group}
    for pool, group in groups.items():
        (container,) = group["template"]["spec"]["containers"]
        req = container["resources"]["requests"]
        assert float(req["cpu"]) <= shapes[pool]["cpu"] - 0.5, (pool, req)
        assert _quantity_gib(req["memory"]) <= shapes[pool]["memory"] - 4, (pool, req)
        assert float(req.get("nvidia.com/gpu", 0)) <= shapes[pool]["gpu"]
    terms = spec["headGroupSpec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1  # one term: every expression must hold (terms would be OR-ed)
    excluded = {(e["key"], v) for e in terms[0]["matchExpressions"] if e["operator"] == "NotIn" for v in e["values"]}
    assert {("eks.amazonaws.com/capacityType", "SPOT"), ("cloud.google.com/gke-spot", "true"),
            ("karpenter.sh/capacity-type", "spot")} <= excluded
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all((CLUSTER / "kuberay" / "serviceaccounts.yaml").read_text())}
    head_sa = spec["headGroupSpec"]["template"]["spec"]["serviceAccountName"]
    worker_sas = {g["template"]["spec"]["serviceAccountName"] for g in spec["workerGroupSpecs"]}
    assert head_sa not in worker_sas and ("ServiceAccount", head_sa) in docs
    assert all(("ServiceAccount", sa) in docs for sa in worker_sas)
    binding = docs[("RoleBinding", head_sa)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": head_sa}]
    rules = docs[("Role", binding["roleRef"]["name"])]["rules"]
    assert any("rayclusters" in r["resources"] and "get" in r["verbs"] for r in rules)
    assert not any(("RoleBinding", sa) in docs for sa in worker_sas)  # workers: no Kubernetes API rights
    text = (CLUSTER / "kuberay" / "serviceaccounts.yaml").read_text()
    assert "eks.amazonaws.com/role-arn" in text and "iam.gke.io/gcp-service-account" in text
