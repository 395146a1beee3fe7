"""Infrastructure-free building blocks shared by the API and the worker."""
