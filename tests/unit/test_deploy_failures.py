"""Bad deploy settings are refused with one readable error, before any server starts."""

from __future__ import annotations

import os
import subprocess

import pytest

from client.errors import ConfigError
from deploy.flags import grpc_tls_from_dir, read_admin_key, restricted_args
from tests.helpers import REPO_ROOT

RUN_TRITON = REPO_ROOT / "deploy" / "gpu" / "run-triton.sh"


@pytest.mark.parametrize("key", ["", "has space", "a:b", "a=b", "a,b"])
def test_an_admin_key_that_would_break_the_flag_is_refused(key):
    with pytest.raises(ConfigError, match="admin key"):
        restricted_args(key)


def test_a_missing_or_unreadable_admin_key_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the admin key file"):
        read_admin_key(tmp_path / "nope")
    (tmp_path / "k").write_text("a b\n")
    with pytest.raises(ConfigError, match=str(tmp_path / "k")):
        read_admin_key(tmp_path / "k")
    (tmp_path / "ok").write_text("s3cret\n")
    assert read_admin_key(tmp_path / "ok") == "s3cret"


def test_grpc_tls_needs_the_pem_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        grpc_tls_from_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="cert=.*no such file"):
        grpc_tls_from_dir(tmp_path)
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    assert grpc_tls_from_dir(tmp_path).client_ca is None
    (tmp_path / "ca.crt").write_text("x")
    assert "--grpc-use-ssl-mutual=true" in grpc_tls_from_dir(tmp_path).args()


def test_local_triton_refuses_a_tls_setting_of_the_wrong_type(tmp_path):
    from deploy.local_triton import LocalTriton

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("")
    with pytest.raises(ConfigError, match="GrpcTls"):
        LocalTriton(tmp_path, grpc_tls=str(tmp_path))
    with pytest.raises(ConfigError, match="admin key"):
        LocalTriton(tmp_path, admin_key="")


def test_the_run_script_refuses_a_model_or_tls_dir_that_is_not_there(tmp_path):
    repo = tmp_path / "repo"
    (repo / "ser_int8").mkdir(parents=True)
    (repo / "ser_int8" / "config.pbtxt").write_text("")
    for extra, message in (({"MODELS": "ser_nope"}, "ser_nope is not in"),
                           ({"GRPC_TLS_DIR": str(tmp_path)}, "needs tls.crt and tls.key")):
        env = {**os.environ, "REPOSITORY": str(repo), **extra}
        proc = subprocess.run([str(RUN_TRITON), "print"], env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_port_another_socket_listens_on_is_taken_and_only_its_owner_listens_there():
    import socket

    from deploy.local_triton import free_ports
    from deploy.ports import listening_ports, port_taken

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert port_taken(port)
        assert port in listening_ports(os.getpid())
        assert port not in listening_ports(os.getppid())
    assert not port_taken(port)
    assert not port_taken(free_ports(1)[0])
    assert listening_ports(2**22 + 1) == set()  # no such process


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True), ("[::1]", True), ("::1", True),
    ("10.0.0.1", False), ("triton.example", False), ("", False),
])
def test_only_loopback_hosts_bypass_the_proxy(host, loopback):
    from deploy.probes import is_loopback

    assert is_loopback(host) is loopback
