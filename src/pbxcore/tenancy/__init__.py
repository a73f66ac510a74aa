"""Tenancy: the data model and its storage, tenant-scoped repositories, config snapshots."""
