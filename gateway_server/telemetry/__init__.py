"""What the gateway tells about itself: Prometheus /metrics and the time-series sink."""
