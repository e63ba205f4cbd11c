"""`ProviderClient`: what a practice's system supplier uses to upload extracts and set consent."""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dpgate._channel import Connection
from dpgate_proto.v1 import provider_pb2, provider_pb2_grpc

CHUNK_BYTES = 1 << 20
"""Bytes per upload message (well under the server's 4 MB message limit)."""
_CONSENT_NAMES = {
    provider_pb2.CONSENT_STATE_GRANTED: "granted",
    provider_pb2.CONSENT_STATE_WITHDRAWN: "withdrawn",
}
_CONSENT_VALUES = {name: value for value, name in _CONSENT_NAMES.items()}

Progress = Callable[[int, int], None]
"""Called as bytes are sent: (bytes sent so far, total bytes)."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """An extract the server accepted and staged (it is in the next published version)."""

    practice_code: str
    rows_staged: int
    """Rows kept after patients who opted out were removed."""
    rows_opted_out: int
    """Rows left out because their patient is on an opt-out list."""


@dataclass(frozen=True, slots=True)
class PracticeStatus:
    """A practice's consent and its last staged upload."""

    dataset_id: str
    practice_code: str
    consent: str
    """"granted" or "withdrawn"."""
    last_upload_at: dt.datetime | None
    """When the last extract was staged (None if none is staged)."""
    rows_staged: int


class ProviderClient(Connection):
    """A connection to a dpgate server with a provider token (or an admin token, for
    `status` and `set_consent` on a practice's written instruction).

    Example:
        >>> with ProviderClient("127.0.0.1:50051", token="dpg_...") as provider:  # doctest: +SKIP
        ...     provider.upload("gp_appointments", "A81001", Path("A81001.csv"))
        UploadResult(practice_code='A81001', rows_staged=61234, rows_opted_out=3120)

    A refused extract raises `InvalidRequestError` whose message lists each distinct
    problem once, one a line (column, first lines and how many lines have it; never a
    value from the file), and whose `metadata["problem_count"]` is their number; nothing is
    staged. A token bound to other practices gets `PermissionDeniedError`.

    Args:
        target: host:port of the server; or of its replicas, as a list or one
            comma-separated string (calls are spread over them and go on when one fails).
        token: the bearer token an administrator issued.
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        private_key: PEM client key, for servers that require mutual TLS.
        certificate_chain: PEM client certificate, likewise.
        timeout: seconds each call may take (an upload of a large extract included).
    """

    def __init__(
        self,
        target: str | Sequence[str],
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(
            target,
            token,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            timeout=timeout,
        )

    @functools.cached_property
    def _provider(self) -> provider_pb2_grpc.ProviderServiceStub:
        return provider_pb2_grpc.ProviderServiceStub(self._channel)

    def upload(
        self,
        dataset_id: str,
        practice_code: str,
        extract: Path | bytes,
        *,
        progress: Progress | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> UploadResult:
        """Upload a practice's raw CSV extract; the server validates, minimises and stages it.

        The extract replaces the practice's previously staged one whole, and reaches
        analysts at the next published version. `progress` is called after each chunk.
        """
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if isinstance(extract, Path):
            size = extract.stat().st_size
            with extract.open("rb") as handle:
                return self._upload(dataset_id, practice_code, handle, size, progress, chunk_bytes)
        data = io.BytesIO(extract)
        return self._upload(dataset_id, practice_code, data, len(extract), progress, chunk_bytes)

    def status(self, dataset_id: str, practice_code: str) -> PracticeStatus:
        """The practice's consent state and its last staged upload."""
        reply = self._call(
            self._provider.GetPracticeStatus,
            provider_pb2.GetPracticeStatusRequest(
                dataset_id=dataset_id, practice_code=practice_code
            ),
        )
        return PracticeStatus(
            dataset_id=dataset_id,
            practice_code=practice_code,
            consent=_CONSENT_NAMES.get(reply.consent, "unspecified"),
            last_upload_at=(
                dt.datetime.fromisoformat(reply.last_upload_at) if reply.last_upload_at else None
            ),
            rows_staged=reply.rows_staged,
        )

    def set_consent(
        self,
        dataset_id: str,
        practice_code: str,
        consent: str,
        instruction_reference: str = "",
    ) -> str:
        """Grant ("granted") or withdraw ("withdrawn") the practice's consent.

        A withdrawal deletes the practice's staged rows and removes the practice (its
        rows and its key) from every version published afterwards; versions and answers
        released before cannot be recalled. An administrator must give the reference of
        the practice's written instruction.
        """
        value = _CONSENT_VALUES.get(consent)
        if value is None:
            raise ValueError(f"consent must be 'granted' or 'withdrawn', not {consent!r}")
        reply = self._call(
            self._provider.SetConsent,
            provider_pb2.SetConsentRequest(
                dataset_id=dataset_id,
                practice_code=practice_code,
                consent=value,
                instruction_reference=instruction_reference,
            ),
        )
        return _CONSENT_NAMES.get(reply.consent, "unspecified")

    def _upload(
        self,
        dataset_id: str,
        practice_code: str,
        source: BinaryIO,
        size: int,
        progress: Progress | None,
        chunk_bytes: int,
    ) -> UploadResult:
        def messages() -> Iterator[provider_pb2.UploadExtractRequest]:
            header = provider_pb2.UploadHeader(
                dataset_id=dataset_id, practice_code=practice_code, size_bytes=size
            )
            yield provider_pb2.UploadExtractRequest(header=header)
            sent = 0
            while chunk := source.read(chunk_bytes):
                yield provider_pb2.UploadExtractRequest(chunk=chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)

        reply = self._call(self._provider.UploadExtract, messages())
        return UploadResult(reply.practice_code, reply.rows_staged, reply.rows_opted_out)
