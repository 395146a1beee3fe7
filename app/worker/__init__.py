"""The background worker: runs the generation jobs that the API accepts."""
