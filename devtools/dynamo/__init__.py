"""NVIDIA Dynamo 1.6.1 run locally without a GPU, etcd or NATS: its install into `.cache/`,
an offline model directory, and the mocker engine and frontend as processes. Used by the
Dynamo benchmark (`python -m benchmarks dynamo`) and the `dynamo` integration tests."""
