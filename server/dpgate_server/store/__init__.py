"""The dataset store: immutable versions under a current pointer, and what they hold.

A version is a directory of Parquet files with a manifest and its metadata (columns,
public category sets, contribution bounds); `store.DatasetStore` writes versions
crash-safely (`durable`) and moves the current pointer atomically. The bounding of each
person's contributions (`bounding`), the keyed pseudonyms that replace NHS numbers
(`pseudonym`), the stored appointments schema (`appointment_files`) and the catalog of
public tables (`catalog`) live here because every reader and writer of a version shares
them. Nothing here imports grpc, the ledger, governance or the synthetic generator.
"""
