"""TLS and mutual TLS with certificates made here; a client without the right one is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dpgate import Client, DpgateError
from dpgate_server.api.server import build_server
from dpgate_server.config import TlsSettings
from dpgate_server.store.store import DatasetVersion

from .conftest import prepare_ledger, settings_for


@dataclass(frozen=True)
class Pem:
    key: bytes
    cert: bytes


def make_cert(name: str, issuer: Pem | None, *, server: bool) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    if issuer is None:
        issuer_name, signing_key = subject, key
    else:
        issuer_cert = x509.load_pem_x509_certificate(issuer.cert)
        issuer_name = issuer_cert.subject
        signing_key = serialization.load_pem_private_key(issuer.key, password=None)  # type: ignore[assignment]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]
    return Pem(
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert=cert.public_bytes(serialization.Encoding.PEM),
    )


@dataclass(frozen=True)
class TlsService:
    target: str
    token: str
    ca: Pem
    client: Pem
    stranger: Pem


def start_tls(small_dataset: DatasetVersion, tmp: Path, *, mutual: bool) -> Iterator[TlsService]:
    ca, other_ca = (
        make_cert("dpgate test CA", None, server=False),
        make_cert("x", None, server=False),
    )
    server_pem = make_cert("localhost", ca, server=True)
    client_pem = make_cert("planner", ca, server=False)
    stranger = make_cert("stranger", other_ca, server=False)
    for name, data in [
        ("server.key", server_pem.key),
        ("server.crt", server_pem.cert),
        ("ca.crt", ca.cert),
    ]:
        (tmp / name).write_bytes(data)
    settings = settings_for(small_dataset.path.parents[2], tmp, workers=1)
    tls = TlsSettings(
        cert_file=tmp / "server.crt",
        key_file=tmp / "server.key",
        client_ca_file=tmp / "ca.crt" if mutual else None,
    )
    running = build_server(settings.model_copy(update={"tls": tls}))
    codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
    tokens = prepare_ledger(settings.storage.ledger_path, small_dataset.dataset_id, str(codes[0]))
    try:
        yield TlsService(f"127.0.0.1:{running.port}", tokens["analyst"], ca, client_pem, stranger)
    finally:
        running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def tls_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsService]:
    yield from start_tls(small_dataset, tmp_path_factory.mktemp("tls"), mutual=False)


@pytest.fixture(scope="module")
def mtls_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsService]:
    yield from start_tls(small_dataset, tmp_path_factory.mktemp("mtls"), mutual=True)


def test_tls_client_trusting_the_ca_is_served(tls_service: TlsService) -> None:
    with Client(
        tls_service.target, token=tls_service.token, root_certificates=tls_service.ca.cert
    ) as client:
        assert client.datasets()


def test_mutual_tls_client_with_a_certificate_is_served(mtls_service: TlsService) -> None:
    with Client(
        mtls_service.target,
        token=mtls_service.token,
        root_certificates=mtls_service.ca.cert,
        private_key=mtls_service.client.key,
        certificate_chain=mtls_service.client.cert,
    ) as client:
        assert client.datasets()


def _plaintext(service: TlsService) -> dict[str, bytes]:
    return {}


def _trusting_another_ca(service: TlsService) -> dict[str, bytes]:
    return {"root_certificates": service.stranger.cert}


def _without_a_certificate(service: TlsService) -> dict[str, bytes]:
    return {"root_certificates": service.ca.cert}


def _with_a_foreign_certificate(service: TlsService) -> dict[str, bytes]:
    return {
        "root_certificates": service.ca.cert,
        "private_key": service.stranger.key,
        "certificate_chain": service.stranger.cert,
    }


@pytest.mark.parametrize(
    ("server", "credentials"),
    [
        ("tls_service", _plaintext),
        ("tls_service", _trusting_another_ca),
        ("mtls_service", _without_a_certificate),
        ("mtls_service", _with_a_foreign_certificate),
    ],
    ids=[
        "plaintext-client-to-tls-server",
        "client-trusting-another-ca",
        "mtls-client-without-a-certificate",
        "mtls-client-with-a-foreign-certificate",
    ],
)
def test_a_connection_without_the_right_credentials_is_refused(
    request: pytest.FixtureRequest,
    server: str,
    credentials: Callable[[TlsService], dict[str, bytes]],
) -> None:
    """The handshake fails: the call never reaches the service (UNAVAILABLE, no answer)."""
    service: TlsService = request.getfixturevalue(server)
    with (
        Client(service.target, token=service.token, timeout=5, **credentials(service)) as client,
        pytest.raises(DpgateError) as caught,
    ):
        client.datasets()
    assert caught.value.code == "UNAVAILABLE"
