"""Talking to Kafka outside faust: client options, topic set-up, reading topics."""
