"""The ad-job service: the queue (actors, broker, store, jobs, retention) and the HTTP API
with its pages (api, ops, web/)."""
