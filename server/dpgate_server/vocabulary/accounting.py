"""How a dataset's privacy loss is measured: the one name the ledger and the engine share.

The ledger keeps budgets per accounting kind (amounts are epsilon for pure DP, rho for
zCDP) and the engine calibrates noise for it; both import it from here so that neither
imports the other, nor the dataset store.
"""

from __future__ import annotations

from enum import StrEnum


class Accounting(StrEnum):
    """How a dataset's privacy loss is measured and composed."""

    PURE_DP = "pure_dp"
    """epsilon-DP with (integer) Laplace noise."""
    ZCDP = "zcdp"
    """rho-zero-concentrated DP with (integer) Gaussian noise."""
