"""`AdminClient`: what a budget administrator uses to run requesters, tokens and budgets."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Iterator

import grpc
import polars as pl

from dpgate._admin_convert import (
    dataset_budget,
    dataset_cap,
    publish_step,
    requester,
    role_value,
    spend_message,
    spending_frame,
    time_text,
    token_record,
)
from dpgate._admin_types import (
    DatasetBudget,
    DatasetCap,
    IssuedToken,
    PublishStep,
    Requester,
    TokenRecord,
)
from dpgate._channel import Connection
from dpgate._convert import budget_info, published_version
from dpgate._types import BudgetInfo, PublishedVersion
from dpgate.errors import from_rpc_error
from dpgate_proto.v1 import admin_pb2, admin_pb2_grpc
from dpgate_shared.units import Amount


class AdminClient(Connection):
    """A connection to a dpgate server with an admin token.

    Every change is recorded in the server's audit chain under this token. Amounts are
    epsilon for pure-DP datasets and rho for zCDP ones, exact to 1e-9.

    Example:
        >>> with AdminClient("127.0.0.1:50051", token="dpg_...") as admin:  # doctest: +SKIP
        ...     planner = admin.create_requester("A. Planner", "NHS Leeds", "DSA-0042")
        ...     issued = admin.issue_token(planner.requester_id, "analyst")
        ...     admin.grant(planner.requester_id, "gp_appointments", epsilon=2)

    Args:
        target: host:port of the server; or of its replicas, as a list or one
            comma-separated string (calls are spread over them and go on when one fails).
        token: an admin bearer token.
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        private_key: PEM client key, for servers that require mutual TLS.
        certificate_chain: PEM client certificate, likewise.
        timeout: seconds each call may take.
    """

    @functools.cached_property
    def _admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self._channel)

    # requesters

    def create_requester(self, name: str, organisation: str, purpose: str) -> Requester:
        """Register a requester (enabled); the server chooses its `requester_id`."""
        reply = self._call(
            self._admin.CreateRequester,
            admin_pb2.CreateRequesterRequest(name=name, organisation=organisation, purpose=purpose),
        )
        return requester(reply.requester)

    def requesters(self) -> list[Requester]:
        """Every requester, enabled or not."""
        reply = self._call(self._admin.ListRequesters, admin_pb2.ListRequestersRequest())
        return [requester(r) for r in reply.requesters]

    def disable_requester(self, requester_id: str) -> Requester:
        """Disable a requester: all its tokens stop working at once."""
        reply = self._call(
            self._admin.DisableRequester,
            admin_pb2.DisableRequesterRequest(requester_id=requester_id),
        )
        return requester(reply.requester)

    def enable_requester(self, requester_id: str) -> Requester:
        """Enable a disabled requester again: its unrevoked, unexpired tokens work again."""
        reply = self._call(
            self._admin.EnableRequester,
            admin_pb2.EnableRequesterRequest(requester_id=requester_id),
        )
        return requester(reply.requester)

    # tokens

    def issue_token(
        self,
        requester_id: str,
        role: str,
        expires_at: dt.datetime | None = None,
        practice_codes: Iterable[str] = (),
    ) -> IssuedToken:
        """Issue a token with one role ("analyst", "admin", "auditor" or "provider").

        The secret (`IssuedToken.token`) is returned this once; the server keeps only its
        hash. A provider token must name its practice codes; no other role may.
        """
        reply = self._call(
            self._admin.IssueToken,
            admin_pb2.IssueTokenRequest(
                requester_id=requester_id,
                role=role_value(role),
                expires_at=time_text(expires_at, "expires_at"),
                practice_codes=list(practice_codes),
            ),
        )
        return IssuedToken(token_id=reply.token_id, token=reply.token)

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token from now on (revoking twice is harmless)."""
        self._call(self._admin.RevokeToken, admin_pb2.RevokeTokenRequest(token_id=token_id))

    def tokens(self, requester_id: str = "") -> list[TokenRecord]:
        """Token records, oldest first, of one requester or all: ids, roles, dates, never
        a secret."""
        reply = self._call(
            self._admin.ListTokens, admin_pb2.ListTokensRequest(requester_id=requester_id)
        )
        return [token_record(t) for t in reply.tokens]

    # allocations and caps

    def grant(
        self,
        requester_id: str,
        dataset_id: str,
        epsilon: Amount | None = None,
        rho: Amount | None = None,
        expires_at: dt.datetime | None = None,
        *,
        purpose: str = "",
        agreement: str = "",
    ) -> BudgetInfo:
        """Create the requester's allocation on a dataset, or add to it if it exists.

        Give `epsilon` for a pure-DP dataset or `rho` for a zCDP one. A new allocation needs
        its `purpose` (what the budget is for) and `agreement` (the data-sharing agreement
        it is given under, e.g. its id): both are public, shown on the transparency page
        beside every release paid from it. On a top-up they are ignored, and `expires_at`
        (if given) replaces the expiry; None leaves it unchanged. An administrator cannot
        grant to their own requester.
        """
        reply = self._call(
            self._admin.GrantAllocation,
            admin_pb2.GrantAllocationRequest(
                requester_id=requester_id,
                dataset_id=dataset_id,
                amount=spend_message(epsilon, rho),
                expires_at=time_text(expires_at, "expires_at"),
                purpose=purpose,
                agreement_reference=agreement,
            ),
        )
        return budget_info(reply.budget)

    def reduce(
        self,
        requester_id: str,
        dataset_id: str,
        epsilon: Amount | None = None,
        rho: Amount | None = None,
    ) -> BudgetInfo:
        """Take back part of an allocation; never below what is already spent."""
        reply = self._call(
            self._admin.ReduceAllocation,
            admin_pb2.ReduceAllocationRequest(
                requester_id=requester_id,
                dataset_id=dataset_id,
                amount=spend_message(epsilon, rho),
            ),
        )
        return budget_info(reply.budget)

    def set_cap(
        self,
        dataset_id: str,
        epsilon: Amount | None = None,
        rho: Amount | None = None,
        *,
        reason: str,
        force: bool = False,
    ) -> DatasetCap:
        """Set a dataset's global cap across all requesters; the reason is audited.

        The cap cannot go below what has been spent on the dataset, nor below the sum of
        its allocations plus what publishing has spent from the cap (the bias figure, bounds
        chosen privately) unless `force` (over-subscription on purpose).
        """
        reply = self._call(
            self._admin.SetDatasetCap,
            admin_pb2.SetDatasetCapRequest(
                dataset_id=dataset_id,
                cap=spend_message(epsilon, rho),
                reason=reason,
                force=force,
            ),
        )
        return dataset_cap(dataset_id, reply)

    def dataset_budget(self, dataset_id: str) -> DatasetBudget:
        """A dataset's cap, allocated and spent totals, and its release-sharing setting."""
        reply = self._call(
            self._admin.GetDatasetBudget, admin_pb2.GetDatasetBudgetRequest(dataset_id=dataset_id)
        )
        return dataset_budget(reply)

    def set_release_sharing(self, dataset_id: str, share_releases: bool) -> bool:
        """Whether a release one requester paid for is served free to others asking the
        identical query (on by default); returns the setting now in force."""
        reply = self._call(
            self._admin.SetReleaseSharing,
            admin_pb2.SetReleaseSharingRequest(
                dataset_id=dataset_id, share_releases=share_releases
            ),
        )
        return reply.share_releases

    # reports

    def spending_report(self, dataset_id: str = "") -> pl.DataFrame:
        """Allocated and spent per requester and dataset (exact Decimal columns).

        Columns: requester_id, organisation, dataset_id, accounting, allocated, spent,
        release_count, purpose, agreement, remaining (what may still be spent from the
        allocation now), expires_at and last_spend_at (None when there is none).
        """
        chunks = self._stream(
            self._admin.GetSpendingReport,
            admin_pb2.GetSpendingReportRequest(dataset_id=dataset_id),
        )
        return spending_frame(row for chunk in chunks for row in chunk.rows)

    def publish_dataset_version(self, dataset_id: str) -> PublishedVersion:
        """Publish the next version from the staged practices; returns the new current one,
        with the bias figure the publish released (or why none: the publish succeeds
        without it when the dataset's cap cannot pay).

        Servers without data governance yet raise NotImplementedYetError.
        """
        reply = self._call(
            self._admin.PublishDatasetVersion,
            admin_pb2.PublishDatasetVersionRequest(dataset_id=dataset_id),
        )
        return _published(reply)

    def publish_with_progress(
        self, dataset_id: str, *, timeout: float | None = None
    ) -> Iterator[PublishStep | PublishedVersion]:
        """Publish as `publish_dataset_version` does, yielding each step as it happens.

        Yields a `PublishStep` per step (stage, units done of total, time left; never a
        count of rows), and last the new current version as a `PublishedVersion` (a
        `DatasetInfo` with the publish's bias figure). A publish can
        take minutes, so by default the call has no deadline (`timeout` sets one). Leaving
        the loop early, or a deadline passing, cancels the call: the server stops the
        publish at its next step and publishes nothing (unless it was already sealing the
        version, which then becomes current).

        Example:
            >>> for event in admin.publish_with_progress("gp_appointments"):  # doctest: +SKIP
            ...     print(event)
        """
        request = admin_pb2.PublishDatasetVersionWithProgressRequest(dataset_id=dataset_id)
        call = self._admin.PublishDatasetVersionWithProgress(
            request, metadata=self._metadata, timeout=timeout
        )
        try:
            for message in call:
                if message.HasField("progress"):
                    yield publish_step(message.progress)
                elif message.HasField("result"):
                    yield _published(message.result)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the call has ended


def _published(reply: admin_pb2.PublishDatasetVersionResponse) -> PublishedVersion:
    figure = reply.bias_figure if reply.HasField("bias_figure") else None
    return published_version(reply.dataset, figure)
