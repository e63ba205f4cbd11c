"""The synthetic England generator: a realistic, entirely made-up GP appointments dataset.

Practices, registered patients and their appointments are drawn from published national
shares (`population`, `appointment_model`, `appointments`) over the real calendar
(`england_calendar`) and sub-ICB geography (`england_geography`); `generator` writes them
as a store version with its metadata (`gp_metadata`), `raw_extracts` as the per-practice
extracts a supplier would upload. It sits above the store and governance, which never
import it.
"""
