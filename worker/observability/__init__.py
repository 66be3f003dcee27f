"""What operators see: metrics, the health endpoints and the logs."""
