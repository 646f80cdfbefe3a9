"""Active queries: the Langfuse-compatible public read API.

`api` parses parameters into the query objects of `models` (`filters` validates Langfuse's `filter`
JSON against a route's columns), `sql` turns those into WHERE clauses with bound values, `service`
runs them (interactive workload class) and answers the response models of `models`.
"""
