"""Development tools, not part of the product: the local Kafka broker, the worker-process
harness and the output comparison that the tests and the benchmarks share."""
