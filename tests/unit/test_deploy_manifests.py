"""The deployment files agree with the code: Containerfile, deploy/compose.yaml, deploy/kubernetes/.

Nothing here starts a container (that is `make image-test`, docs/deploy.md). These tests read the
files and check what a typo would silently break: probes that point at real routes, environment
names that are real settings, one image name, a migration that runs `task-assistant migrate`,
selectors that select, and the Containerfile's promises (locked install without the dev extra,
non-root user, exec-form entrypoint, a health check against readiness).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from functools import cache
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML: installed with uvicorn[standard]

from backend.core.config import Settings
from backend.web.health import router as health_router
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
IMAGE_REPOSITORY = "task-assistant"
# Environment that is not a Settings field but that the service or its libraries read.
NON_SETTINGS_ENV = {"PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS"}


# --- helpers ---------------------------------------------------------------------------------


@cache
def setting_names() -> frozenset[str]:
    return frozenset(name.upper() for name in Settings.model_fields)


@cache
def health_paths() -> frozenset[str]:
    return frozenset(route.path for route in health_router.routes)  # type: ignore[attr-defined]


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR:?message}` / `${VAR}`, with every variable unset."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if op in (":-", "-"):
            return arg
        return f"<{name}>"

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", sub, value)


def repository(image: str) -> str:
    """`registry.example.com:5000/team/task-assistant:1.2@sha256:…` -> `task-assistant`."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


@cache
def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Containerfile").read_text()
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(name: str, stage: int | None = None) -> list[str]:
    """Arguments of every `name` instruction; with `stage`, only in that stage (0-based)."""
    current, found = -1, []
    for word, rest in containerfile():
        if word == "FROM":
            current += 1
        if word == name and (stage is None or stage == current):
            found.append(rest)
    return found


def exec_form(instruction: str) -> list[str]:
    args = instructions(instruction)[-1]
    value = json.loads(args)  # shell form would not parse as JSON
    assert isinstance(value, list) and all(isinstance(a, str) for a in value)
    return value


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


@cache
def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
    }


def k8s(kind: str) -> dict[str, Any]:
    found = [
        doc
        for docs in k8s_documents().values()
        for doc in docs
        if doc.get("kind") == kind and "apiVersion" in doc
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(kind: str) -> dict[str, Any]:
    return k8s(kind)["spec"]["template"]["spec"]


def server_args(args: list[str]) -> tuple[str, int]:
    """--host and --port of a `serve` command line, with the CLI's defaults."""
    host, port = "127.0.0.1", 8000
    for flag, value in pairwise(args):
        if flag == "--host":
            host = value
        elif flag == "--port":
            port = int(value)
    return host, port


# --- the Containerfile ---------------------------------------------------------------------------


def test_base_image_is_a_build_argument_defaulting_to_the_public_python_image():
    assert instructions("ARG")[0] == "BASE_IMAGE=python:3.11-slim-bookworm"
    froms = instructions("FROM")
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)


def test_dependencies_are_installed_from_the_lock_without_dev_tools():
    runs = " ".join(instructions("RUN", stage=0))
    syncs = re.findall(r"uv sync[^;&|]*", runs)
    assert syncs, "the build stage installs with uv sync"
    for sync in syncs:
        flags = shlex.split(sync)
        assert "--locked" in flags, sync
        assert "--no-dev" in flags, sync
        assert "--all-extras" not in flags and "dev" not in flags, sync
    assert (
        "dev" in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    )
    # what reaches the runtime stage is the build stage's /app, nothing from the host
    assert any(copy.startswith("--from=build /app") for copy in instructions("COPY", stage=1))


def test_runtime_runs_as_a_numeric_non_root_user():
    user = instructions("USER", stage=1)[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user
    assert not gid or gid.isdigit()


def test_entrypoint_is_exec_form_and_serves_on_all_interfaces():
    assert exec_form("ENTRYPOINT") == ["task-assistant"]
    cmd = exec_form("CMD")
    assert cmd[0] == "serve"
    host, port = server_args(cmd)
    assert host == "0.0.0.0"
    assert instructions("EXPOSE")[-1] == str(port)


def test_healthcheck_asks_readiness_with_python_on_the_served_port():
    check = instructions("HEALTHCHECK")[-1]
    options, _, command = check.partition("CMD ")
    argv = json.loads(command)
    assert argv[0] in {"python3", "python"}, "no curl in slim images"
    url = re.search(r"http://[^'\"]+", " ".join(argv))
    assert url, argv
    parts = urlsplit(url.group(0))
    assert parts.path == "/health/ready" and parts.path in health_paths()
    assert parts.port == server_args(exec_form("CMD"))[1]
    assert "--timeout=" in options


def test_build_context_is_filtered_the_same_for_every_builder():
    ignore = (ROOT / ".containerignore").read_text()
    assert ignore == (ROOT / ".dockerignore").read_text()
    assert "\n*\n" in f"\n{ignore}", "everything is excluded unless listed"
    for needed in (
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "alembic.ini",
        "migrations",
        "backend",
    ):
        assert f"!{needed}" in ignore.split(), needed
    for copied in instructions("COPY", stage=0):
        for source in copied.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_make_targets_run_the_image_scripts():
    makefile = (ROOT / "Makefile").read_text()
    for target, script in (
        ("image", "deploy/image/build.sh"),
        ("image-test", "deploy/image/test.sh"),
    ):
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe and script in recipe.group(1), target
        assert os.access(ROOT / script, os.X_OK), script


# --- compose ------------------------------------------------------------------------------------


def test_compose_has_two_api_replicas_pgbouncer_postgres_and_a_one_shot_migration():
    services = compose()["services"]
    assert {"api", "migrate", "pgbouncer", "postgres"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    images = {interpolate(services[name]["image"]) for name in ("api", "migrate")}
    assert len(images) == 1 and repository(images.pop()) == IMAGE_REPOSITORY
    assert services["migrate"]["command"] == ["migrate"]  # after the ENTRYPOINT task-assistant
    assert services["migrate"].get("restart") == "no"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    host, port = server_args(services["api"]["command"])
    assert host == "0.0.0.0"
    assert all(str(p).endswith(f":{port}") for p in services["api"]["ports"])


def test_compose_pgbouncer_pools_in_transaction_mode_with_prepared_statements():
    pgbouncer = compose()["services"]["pgbouncer"]
    env = compose_env("pgbouncer")
    assert env["POOL_MODE"] == "transaction"
    assert int(env["MAX_PREPARED_STATEMENTS"]) > 0
    version = tuple(int(n) for n in pgbouncer["image"].rsplit(":", 1)[1].split("."))
    assert version >= (1, 21), "psycopg prepares statements: PgBouncer 1.21+ tracks them"


def test_compose_api_goes_through_pgbouncer_and_migrations_go_straight_to_postgres():
    api, migrate = (
        urlsplit(compose_env("api")["DATABASE_URL"]),
        urlsplit(compose_env("migrate")["DATABASE_URL"]),
    )
    assert api.hostname == "pgbouncer" and migrate.hostname == "postgres"
    assert api.path == migrate.path
    # PgBouncer refuses the startup option that would carry the statement timeout
    assert compose_env("api")["DATABASE_STATEMENT_TIMEOUT_MS"] == "0"
    assert compose_env("api")["MIGRATE_ON_START"] == "false"
    initdb = [
        v for v in compose()["services"]["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v
    ]
    assert initdb and "statement_timeout" in "".join(
        p.read_text() for p in (DEPLOY / initdb[0].split(":")[0]).glob("*.sql")
    )


@pytest.mark.parametrize("service", ["api", "migrate"])
def test_compose_environment_names_are_settings(service):
    unknown = set(compose_env(service)) - setting_names() - NON_SETTINGS_ENV
    assert not unknown, f"{service}: not settings in backend/core/config.py: {sorted(unknown)}"


# --- Kubernetes ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = k8s_documents()["kustomization.yaml"][0]
    listed = set(kustomization["resources"])
    assert listed == set(k8s_documents()) - {"kustomization.yaml", "secret.example.yaml"}
    assert [i["name"] for i in kustomization["images"]] == [IMAGE_REPOSITORY]
    assert repository(kustomization["images"][0]["newName"]) == IMAGE_REPOSITORY


def test_every_container_uses_the_one_image_name():
    for kind in ("Deployment", "Job"):
        for container in pod_spec(kind)["containers"]:
            assert container["image"] == IMAGE_REPOSITORY, (kind, container["name"])


def test_deployment_probes_point_at_real_health_routes_on_a_declared_port():
    (api,) = pod_spec("Deployment")["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # liveness must not ask the database: an outage would restart every pod
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in health_paths(), (probe, get["path"])
        assert get["port"] in ports or get["port"] in ports.values(), probe
    host, port = server_args(api["args"])
    assert api["args"][0] == "serve" and host == "0.0.0.0"
    assert port in ports.values()
    assert "command" not in api, "the image's ENTRYPOINT (task-assistant) is used"


def test_deployment_stops_gracefully_as_the_image_user():
    spec = pod_spec("Deployment")
    # streamed turns get up to 30 s after SIGTERM (README, "Deploying several replicas")
    assert spec["terminationGracePeriodSeconds"] > 30
    uid = int(instructions("USER", stage=1)[-1].split(":")[0])
    for kind in ("Deployment", "Job"):
        context = pod_spec(kind)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, kind
    (api,) = spec["containers"]
    if api["securityContext"].get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"] for m in api["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, "DATA_DIR and /tmp stay writable"


def test_migration_job_runs_task_assistant_migrate_once():
    job = k8s("Job")
    (container,) = pod_spec("Job")["containers"]
    assert exec_form("ENTRYPOINT") + container["args"] == ["task-assistant", "migrate"]
    assert "command" not in container
    assert pod_spec("Job")["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"]["backoffLimit"] >= 1
    assert k8s("ConfigMap")["data"]["MIGRATE_ON_START"] == "false", (
        "the Job migrates, the pods do not"
    )


def test_service_pdb_and_hpa_select_the_deployment():
    deployment = k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (api,) = pod_spec("Deployment")["containers"]
    port_names = {p["name"] for p in api["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    job_labels = k8s("Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items(), (
        "the Service must not select migration pods"
    )
    hpa = k8s("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # a drain can always proceed: the budget leaves room below the smallest size
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_configuration_names_are_settings_and_references_resolve():
    configmap, secret = k8s("ConfigMap"), k8s("Secret")
    for kind, names in (("ConfigMap", configmap["data"]), ("Secret", secret["stringData"])):
        unknown = set(names) - setting_names() - NON_SETTINGS_ENV
        assert not unknown, f"{kind}: not settings in backend/core/config.py: {sorted(unknown)}"
    for kind in ("Deployment", "Job"):
        for container in pod_spec(kind)["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
                if "secretRef" in source:
                    assert source["secretRef"]["name"] == secret["metadata"]["name"]
            for var in container.get("env", []):
                assert var["name"] in setting_names() | NON_SETTINGS_ENV, var["name"]
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"]
