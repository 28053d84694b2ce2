"""A real Flower deployment on 127.0.0.1 for tests: one SuperLink, N SuperNodes, the `flwr` CLI, all by process id.

Everything a test starts runs in its own session (process group), so :meth:`Deployment.close` stops the whole tree
(SuperExec and ClientApp children included) by group id, also when the test fails. Ports are chosen free at run
time. TLS certificates and SuperNode keys are generated here, with ``cryptography`` (a dependency of flwr).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BIN = Path(sys.executable).parent
APP_DIR = Path(__file__).resolve().parents[1] / "flower-app"
ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it: (ca.crt, server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prunefl test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def make_node_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's P-384 key pair in OpenSSH format (what `flower-supernode` and `flwr supernode register` read)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / f"{name}", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


@dataclass
class Deployment:
    """One SuperLink and its SuperNodes on 127.0.0.1, started and stopped by process group.

    Parameters
    ----------
    folder : Path
        Logs, certificates, keys and ``FLWR_HOME`` go here.
    secure : bool
        TLS on every link, and SuperNode authentication (only registered node keys may connect).
    """

    folder: Path
    secure: bool = False
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.home = self.folder / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self.env = {**os.environ, **ENV, "FLWR_HOME": str(self.home), "PATH": f"{BIN}:{os.environ['PATH']}"}
        if self.secure:
            self.ca, self.cert, self.key = make_tls(self.folder / "certs")
        connection = f'address = "127.0.0.1:{self.port}"\n' + (
            f'root-certificates = "{self.ca}"\n' if self.secure else "insecure = true\n"
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n[superlink.test]\n{connection}', encoding="utf-8"
        )

    # -- processes -------------------------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.folder, start_new_session=True)
        log.close()

    def start_superlink(self) -> None:
        tls = (["--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(self.cert), "--ssl-keyfile", str(self.key),
                "--enable-supernode-auth"] if self.secure else ["--insecure"])
        self._start("superlink", [str(BIN / "flower-superlink"), *tls, "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        self._wait_port(self.port, "superlink")

    def start_supernode(self, partition: int, register: bool = True, name: str = "") -> str:
        """Start a SuperNode for ``partition``; with ``secure``, its key is registered unless ``register`` is false."""
        name = name or f"supernode-{partition}"
        if self.secure:
            private, public = make_node_keys(self.folder / "keys", name)
            if register:
                self.flwr("supernode", "register", str(public), "test")
            tls = ["--root-certificates", str(self.ca), "--auth-supernode-private-key", str(private)]
        else:
            tls = ["--insecure"]
        self._start(name, [str(BIN / "flower-supernode"), *tls, "--superlink", f"127.0.0.1:{self.port}",
                           "--host", "127.0.0.1", "--port", str(free_port()),
                           "--node-config", f"partition-id={partition}"])
        return name

    def stop(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stop one process tree by its group id (SIGKILL: a device that vanishes)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def close(self) -> None:
        """Stop everything this deployment started: TERM, then KILL what is left, by process group."""
        for name in list(self.procs):
            try:
                os.killpg(self.procs[name].pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # children of a stopped parent too
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
            del self.procs[name]

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_port(self, port: int, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not listen on {port} within {timeout} s")

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    # -- the flwr CLI ----------------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        out = subprocess.run([str(BIN / "flwr"), *args], env=self.env, cwd=self.folder, capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"flwr {' '.join(args)} exited {out.returncode}: {out.stdout}\n{out.stderr}")
        return out.stdout

    def submit(self, run_config: str) -> int:
        """`flwr run` the app; return the run id (it exits 0 whether the run later succeeds or not)."""
        out = self.flwr("run", str(APP_DIR), "test", "--run-config", run_config, "--format", "json")
        return int(json.loads(out)["run-id"])

    def status(self, run_id: int) -> str:
        out = json.loads(self.flwr("ls", "test", "--run-id", str(run_id), "--format", "json"))
        return str(out["runs"][0]["status"])

    def wait(self, run_id: int, timeout: float = 600.0) -> str:
        """Poll the run's status until it is finished; return it (``finished:completed`` on success)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(2.0)
        raise TimeoutError(f"run {run_id} not finished within {timeout} s (status {status})")

    def run_log(self, run_id: int) -> str:
        """What the ServerApp logged (`flwr log`), for a failing test's message."""
        try:
            out = subprocess.run([str(BIN / "flwr"), "log", str(run_id), "test", "--show"], env=self.env,
                                 cwd=self.folder, capture_output=True, text=True, timeout=30)
            return out.stdout + out.stderr
        except subprocess.TimeoutExpired as error:
            return str(error.stdout or "")
