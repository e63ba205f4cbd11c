"""dpgate: the client library for the dpgate differential-privacy statistics service.

The client installs without the server's dependencies (no OpenDP): `pip install dpgate`.
Generated gRPC stubs live in the shared `dpgate_proto` package and never appear in the
public API.
"""

from dpgate._admin import AdminClient
from dpgate._admin_types import (
    AuditEvent,
    AuditHead,
    ChainVerification,
    DatasetBudget,
    DatasetCap,
    IssuedToken,
    PublishStep,
    Requester,
    TokenRecord,
)
from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate._provider import PracticeStatus, ProviderClient, UploadResult
from dpgate._query import Condition, QuerySpec, count, total
from dpgate._question_sets import SetMemberPreview, SetPreview
from dpgate._retry import RetryPolicy
from dpgate._types import (
    BiasFigure,
    BudgetInfo,
    ColumnInfo,
    ContributionBounds,
    DatasetDescription,
    DatasetInfo,
    DerivedOption,
    DroppedPatients,
    EarlierRelease,
    KeyValue,
    PeriodCap,
    PreviewResult,
    PublishedVersion,
    QueryResult,
    ReleaseInfo,
)
from dpgate.accuracy import median_rel_half_width, relative_half_widths
from dpgate.analysis import (
    Estimates,
    compare_with,
    complete_weeks,
    days_in_period,
    per_population,
    ratio,
    round_for_display,
    sum_cells,
)
from dpgate.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BudgetExhaustedError,
    DeadlineExceededError,
    DpgateError,
    InvalidQueryError,
    InvalidRequestError,
    NotFoundError,
    NotImplementedYetError,
    OverloadedError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServerError,
    ServerUnavailableError,
)
from dpgate.publication import nhs_conventions
from dpgate_shared.privacy_loss import DEFAULT_DELTA, in_plain_terms, zcdp_epsilon
from dpgate_shared.reasons import ErrorReason

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_DELTA",
    "AdminClient",
    "AlreadyExistsError",
    "AuditClient",
    "AuditEvent",
    "AuditHead",
    "AuthenticationError",
    "BiasFigure",
    "BudgetExhaustedError",
    "BudgetInfo",
    "ChainVerification",
    "Client",
    "ColumnInfo",
    "Condition",
    "ContributionBounds",
    "DatasetBudget",
    "DatasetCap",
    "DatasetDescription",
    "DatasetInfo",
    "DeadlineExceededError",
    "DerivedOption",
    "DpgateError",
    "DroppedPatients",
    "EarlierRelease",
    "ErrorReason",
    "Estimates",
    "InvalidQueryError",
    "InvalidRequestError",
    "IssuedToken",
    "KeyValue",
    "NotFoundError",
    "NotImplementedYetError",
    "OverloadedError",
    "PeriodCap",
    "PermissionDeniedError",
    "PracticeStatus",
    "PreconditionFailedError",
    "PreviewResult",
    "ProviderClient",
    "PublishStep",
    "PublishedVersion",
    "QueryResult",
    "QuerySpec",
    "ReleaseInfo",
    "Requester",
    "RetryPolicy",
    "ServerError",
    "ServerUnavailableError",
    "SetMemberPreview",
    "SetPreview",
    "TokenRecord",
    "UploadResult",
    "__version__",
    "compare_with",
    "complete_weeks",
    "count",
    "days_in_period",
    "in_plain_terms",
    "median_rel_half_width",
    "nhs_conventions",
    "per_population",
    "ratio",
    "relative_half_widths",
    "round_for_display",
    "sum_cells",
    "total",
    "zcdp_epsilon",
]
