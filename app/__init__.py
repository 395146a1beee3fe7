"""The bundled Liftoff app: a FastAPI API and a background worker for AI generation jobs."""
