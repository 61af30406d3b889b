"""The request-routing benchmark's own views, URLs and settings variants (never product URLs)."""
