"""The HTTP API: app factory, auth, rate limits and thin routes over the services below."""
