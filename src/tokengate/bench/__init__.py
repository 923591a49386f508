"""Workloads, the timing client, server-metrics scraping, statistics and reports."""
