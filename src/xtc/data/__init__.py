"""GLUE tasks: definitions, readers (official files or the hub), metrics, batching."""
