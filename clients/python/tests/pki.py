"""Throwaway certificates for the TLS tests, made at run time with the
openssl command line (nothing with a key is ever committed).

    pki = Pki.create(tmp_dir)
    pki.ca, pki.server_cert, pki.server_key             # the broker's, for 127.0.0.1 and localhost
    pki.client("worker-fleet")                          # (cert, key) with subject CN=worker-fleet
    Pki.create(other_dir, "another CA").ca              # a CA the broker's certificate does not chain to
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# Each openssl step takes well under a second; a minute means it hung.
OPENSSL_TIMEOUT = 60


def openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{err.stderr.decode(errors='replace')}") from err


def require_openssl() -> None:
    """The TLS tests need the openssl command; a machine without it cannot
    make their certificates, which is the one reason they skip."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: it makes the TLS tests' certificates")


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @classmethod
    def create(cls, directory: Path, ca_name: str = "jobwire test CA") -> Pki:
        """A CA (EC P-256: quick to make), and a server certificate signed by
        it for 127.0.0.1 and localhost."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "1", "-subj", f"/CN={ca_name}", "-keyout", "ca.key", "-out", "ca.pem",
                cwd=directory)  # fmt: skip
        pki._sign("server", "/CN=jobwire test server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        return pki

    def client(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate with subject CN=common_name: (cert, key)."""
        name = f"client-{common_name}"
        if not (self.dir / f"{name}.pem").exists():
            self._sign(name, f"/CN={common_name}", "extendedKeyUsage=clientAuth")
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def _sign(self, name: str, subject: str, extension: str) -> None:
        (self.dir / f"{name}.ext").write_text(extension + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=self.dir)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=self.dir)  # fmt: skip
