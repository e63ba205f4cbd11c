"""Governance: how a provider's extract becomes part of a published dataset version.

Extracts arrive in a documented format (`extract_format`), are checked and minimised
(`ingest`), filtered by the national and type-1 opt-outs (`optouts`) and the practices'
consent (`consent`), kept between uploads (`staging`) and written as a new version of the
store (`publishing`). `service.Governance` is the one entry point the API calls; its
refusals are `errors.GovernanceError`. It builds on the store and never on the synthetic
generator.
"""
