"""Throwaway certificates for TLS tests, made with the ``openssl`` command.

A test makes a certificate authority, then has it sign a server's or a client's
certificate. Keys are EC P-256 (fast to make; every TLS stack here reads them),
valid for two days, written unencrypted to the folder given.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class OpensslUnavailableError(RuntimeError):
    """The ``openssl`` command is missing or failed."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate (PEM) and its private key (PEM)."""

    cert: Path
    key: Path


def _openssl(*arguments: str) -> None:
    program = shutil.which("openssl")
    if program is None:
        raise OpensslUnavailableError("the openssl command is not installed")
    done = subprocess.run(
        [program, *arguments], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise OpensslUnavailableError(f"openssl {arguments[0]} failed: {done.stderr}")


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_authority(folder: Path, name: str) -> KeyPair:
    """A self-signed certificate authority ``name`` (files ``name.pem``, ``name.key``)."""
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", *_NEW_KEY, "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(pair.key), "-out", str(pair.cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def issue(
    authority: KeyPair, folder: Path, name: str, *, ip: str | None = None, dns: str | None = None
) -> KeyPair:
    """A certificate for ``name`` signed by ``authority``.

    With ``ip`` or ``dns`` it is a server's, valid for that address or host name
    only; without, a client's (subject ``CN=name``).
    """
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    names = [f"IP:{ip}"] * (ip is not None) + [f"DNS:{dns}"] * (dns is not None)
    usage = "serverAuth" if names else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid:always",
    ]
    if names:
        lines.append(f"subjectAltName={','.join(names)}")
    extensions.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", *_NEW_KEY, "-subj", f"/CN={name}",
        "-keyout", str(pair.key), "-out", str(request),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(authority.cert),
        "-CAkey", str(authority.key), "-set_serial", str(secrets.randbits(120)),
        "-days", "2", "-extfile", str(extensions), "-out", str(pair.cert),
    )  # fmt: skip
    request.unlink()
    extensions.unlink()
    return pair


@dataclass(frozen=True)
class TlsFiles:
    """Everything the TLS tests need: the authority the services trust, another one
    nobody trusts, the services' certificate (for 127.0.0.1 only) and two client
    certificates, one from each authority."""

    authority: KeyPair
    other_authority: KeyPair
    server: KeyPair
    client: KeyPair
    rogue_client: KeyPair


def make_tls_files(folder: Path) -> TlsFiles:
    authority = make_authority(folder, "pachyderm-test-ca")
    other = make_authority(folder, "untrusted-ca")
    return TlsFiles(
        authority=authority,
        other_authority=other,
        server=issue(authority, folder, "server", ip="127.0.0.1"),
        client=issue(authority, folder, "client"),
        rogue_client=issue(other, folder, "rogue-client"),
    )
