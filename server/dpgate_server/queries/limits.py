"""Per-query limits: how large a single question may be (server configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from dpgate_server.spend import to_units_floor
from dpgate_server.vocabulary.accounting import Accounting


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Ceilings checked before a query touches data.

    Attributes:
        max_cells: most cells one release may have. Noise costs ~7 us a cell (Laplace)
            and every cell travels back to the requester; practice x week for all of
            England is ~330k cells.
        max_filters: most filters in one query.
        max_in_values: most values in one `in` filter.
        max_epsilon: most epsilon one query may spend (pure-DP datasets).
        max_rho: most rho one query may spend (zCDP datasets).
        worker_memory_bytes: memory a query worker may use (the pool's cap); a query
            whose public-metadata estimate (queries.memory) passes it is refused before
            it runs. None: no check.
    """

    max_cells: int = 400_000
    max_filters: int = 16
    max_in_values: int = 1_000
    max_epsilon: Decimal = Decimal(10)
    max_rho: Decimal = Decimal(5)
    worker_memory_bytes: int | None = None

    def max_spend_units(self, accounting: Accounting) -> int:
        """The per-query ceiling for `accounting`, in ledger units (rounded down)."""
        ceiling = self.max_epsilon if accounting is Accounting.PURE_DP else self.max_rho
        return to_units_floor(ceiling)
