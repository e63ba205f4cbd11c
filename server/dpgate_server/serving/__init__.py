"""Serving from several processes on one port (`server.processes`): the supervisor that
starts them, the lock that guards the port, and each process's share of the limits.

Nothing here imports gRPC: the supervisor starts its children (fresh interpreters, by
exec) before any gRPC object exists, and only the children build servers.
"""
