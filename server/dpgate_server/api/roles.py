"""The one table of which role may call each RPC.

An RPC missing from this table is not served to anyone with a token: the interceptor
refuses it, so adding an RPC to the contract without deciding its roles fails closed.
Health checking and reflection are public (they reveal no data) and never reach here.
"""

from __future__ import annotations

from types import MappingProxyType

from dpgate_server.ledger.model import Role

_ANALYST = frozenset({Role.ANALYST})
_ADMIN = frozenset({Role.ADMIN})
_AUDITOR = frozenset({Role.AUDITOR})
_PROVIDER = frozenset({Role.PROVIDER})
_PROVIDER_OR_ADMIN = frozenset({Role.PROVIDER, Role.ADMIN})

ROLES_BY_METHOD = MappingProxyType(
    {
        "/dpgate.v1.QueryService/ListDatasets": _ANALYST,
        "/dpgate.v1.QueryService/DescribeDataset": _ANALYST,
        "/dpgate.v1.QueryService/StreamPublicTable": _ANALYST,
        "/dpgate.v1.QueryService/PreviewQuery": _ANALYST,
        "/dpgate.v1.QueryService/RunQuery": _ANALYST,
        "/dpgate.v1.QueryService/GetBudget": _ANALYST,
        "/dpgate.v1.QueryService/ListReleases": _ANALYST,
        "/dpgate.v1.QueryService/PreviewQuerySet": _ANALYST,
        "/dpgate.v1.QueryService/RunQuerySet": _ANALYST,
        "/dpgate.v1.AdminService/CreateRequester": _ADMIN,
        "/dpgate.v1.AdminService/ListRequesters": _ADMIN,
        "/dpgate.v1.AdminService/DisableRequester": _ADMIN,
        "/dpgate.v1.AdminService/EnableRequester": _ADMIN,
        "/dpgate.v1.AdminService/IssueToken": _ADMIN,
        "/dpgate.v1.AdminService/RevokeToken": _ADMIN,
        "/dpgate.v1.AdminService/ListTokens": _ADMIN,
        "/dpgate.v1.AdminService/GrantAllocation": _ADMIN,
        "/dpgate.v1.AdminService/ReduceAllocation": _ADMIN,
        "/dpgate.v1.AdminService/SetDatasetCap": _ADMIN,
        "/dpgate.v1.AdminService/GetDatasetBudget": _ADMIN,
        "/dpgate.v1.AdminService/SetReleaseSharing": _ADMIN,
        "/dpgate.v1.AdminService/GetSpendingReport": _ADMIN,
        "/dpgate.v1.AdminService/PublishDatasetVersion": _ADMIN,
        "/dpgate.v1.AdminService/PublishDatasetVersionWithProgress": _ADMIN,
        "/dpgate.v1.AuditService/ListAuditEvents": _AUDITOR,
        "/dpgate.v1.AuditService/VerifyAuditChain": _AUDITOR,
        "/dpgate.v1.AuditService/GetAuditHead": _AUDITOR,
        "/dpgate.v1.AuditService/ExportTransparencyReport": _AUDITOR,
        "/dpgate.v1.AuditService/GetSignedAuditHead": _AUDITOR,
        "/dpgate.v1.AuditService/VerifySignedAuditHead": _AUDITOR,
        "/dpgate.v1.ProviderService/UploadExtract": _PROVIDER,
        "/dpgate.v1.ProviderService/GetPracticeStatus": _PROVIDER_OR_ADMIN,
        "/dpgate.v1.ProviderService/SetConsent": _PROVIDER_OR_ADMIN,
    }
)

PUBLIC_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Method prefixes served without a token: they reveal no data."""


def rpc_name(method: str) -> str:
    """ "/dpgate.v1.QueryService/RunQuery" -> "RunQuery"."""
    return method.rsplit("/", 1)[-1]
