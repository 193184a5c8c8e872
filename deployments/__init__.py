"""Prefect deployments of toucan and the local server + worker supervisor."""
