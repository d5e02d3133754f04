"""Verify the container_runtime role on a real systemd host."""
import json

import pytest


def daemon_json(host):
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


def test_engine_is_running_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_daemon_json_keeps_site_keys(host):
    cfg = daemon_json(host)
    # Written by prepare.yml before the role ran: must survive the merge.
    assert cfg["max-concurrent-downloads"] == 7
    assert cfg["log-opts"]["labels"] == "site"


def test_daemon_json_has_role_settings(host):
    cfg = daemon_json(host)
    assert cfg["log-driver"] == "json-file"
    assert cfg["log-opts"]["max-size"] == "20m"
    assert cfg["log-opts"]["max-file"] == "5"
    assert cfg["live-restore"] is True
    assert cfg["registry-mirrors"] == ["https://mirror.lab.invalid:5000"]
    assert cfg["default-ulimits"]["nofile"]["Soft"] == 8192
    # Unset optional settings are not written as nulls.
    assert "data-root" not in cfg


def test_running_engine_uses_the_settings(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    assert info["Driver"] == "overlay2"
    mirrors = info["RegistryConfig"]["Mirrors"]
    assert "https://mirror.lab.invalid:5000/" in mirrors


def test_a_real_container_runs(host):
    host.check_output(
        "test -n \"$(docker images -q modelops-verify:busybox)\" || "
        "tar -C / -c bin/busybox | docker import -c 'CMD [\"/bin/busybox\"]' - modelops-verify:busybox"
    )
    # Bridge network and a published loopback port, as model replicas use.
    out = host.check_output(
        "docker run --rm -p 127.0.0.1:18080:8080 modelops-verify:busybox /bin/busybox sh -c 'ulimit -n; echo hello'")
    assert out.split() == ["8192", "hello"]


def test_container_logs_rotate_with_configured_options(host):
    cid = host.check_output("docker create modelops-verify:busybox /bin/busybox true").strip()
    try:
        cfg = json.loads(host.check_output(f"docker inspect --format '{{{{json .HostConfig.LogConfig}}}}' {cid}"))
    finally:
        host.run(f"docker rm {cid}")
    assert cfg["Type"] == "json-file"
    assert cfg["Config"]["max-size"] == "20m"


@pytest.mark.parametrize("pkg", ["docker.io", "python3-docker"])
def test_packages_installed(host, pkg):
    assert host.package(pkg).is_installed
