"""User-requested batch exports: one filtered read-API query, as of its creation, to one file."""
