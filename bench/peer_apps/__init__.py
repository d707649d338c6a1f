"""The peer queues' application modules, loaded by their own worker commands in the benchmark."""
