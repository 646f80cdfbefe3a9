"""Active queries: the Langfuse-compatible public read API.

`api` parses parameters into the query objects of `models`, `sql` turns those into WHERE clauses,
`service` runs them (interactive workload class) and answers the response models of `models`.
"""
