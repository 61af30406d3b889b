"""Organizations (tenants), their domains and plans; provisioning, lifecycle and tenant context."""
