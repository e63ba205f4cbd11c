"""Shared vocabulary: the public names every other part of the server speaks.

The lowest layer. It holds what is true of the service and its dataset independently of
any row or any component: how privacy loss is accounted (`accounting`), the published
category sets of the appointments dataset (`appointment_categories`), the data
window's calendar (`england_calendar`), and why a request is refused (`errors`: the
`ErrorReason` catalogue, the `DomainError` base and the one `DatasetNotFoundError`).
The ledger, the store, governance, the query engine and the synthetic generator all
import it; it imports nothing of dpgate's, so
none of them needs another for a name. Exact spend units live next to it in
`dpgate_server.spend`.
"""
