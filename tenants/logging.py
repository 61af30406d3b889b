"""Log lines name the organization they were written for (the current tenant context)."""

from __future__ import annotations

import logging

from tenants import context


class OrganizationFilter(logging.Filter):
    """Adds `organization` (the current organization's public id, or empty) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            tenant = context.current_tenant()
        except Exception:  # never let logging fail a request
            tenant = None
        public_id = getattr(tenant, "public_id", None)
        record.organization = str(public_id) if public_id is not None else ""
        return True
