"""dpgate: the client library for the dpgate differential-privacy statistics service.

The client installs without the server's dependencies (no OpenDP): `pip install dpgate`.
The typed `Client`, `AdminClient` and `AuditClient` arrive with the service issue; the
generated gRPC stubs in `dpgate._proto` are internal and never part of the public API.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
