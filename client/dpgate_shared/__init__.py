"""Rules the client and the server must agree on, in standard-library Python only.

The client cannot import the server, and the server's domain packages (the ledger, the
query engine) must not load the client's libraries (gRPC, Polars) through `dpgate`'s
package import. So the few rules both sides apply live here, in a package of their own
that ships in the same wheel and imports nothing outside the standard library:

- `dpgate_shared.units`: exact amounts of epsilon and rho (integers of 1e-9), their
  conversion from what people write and their display ("epsilon 4.8").
- `dpgate_shared.confidence`: the interval confidence level's default and its check.
- `dpgate_shared.privacy_loss`: a rho in plain terms, the (epsilon, delta) it implies (the
  conversion OpenDP uses, without OpenDP), for every view that shows a rho.
- `dpgate_shared.noise_sums`: the exact interval of a sum of independent noise draws,
  for the server's derived answers and the client's `sum_cells` alike.
- `dpgate_shared.reasons`: `ErrorReason`, why a request was refused (the proto's
  `dpgate.v1.ErrorReason` names): the server raises with them, the client maps by them.
"""
