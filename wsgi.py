"""The WSGI entry point: ``gunicorn wsgi:app``."""
from feedproxy import create_app

app = create_app()
