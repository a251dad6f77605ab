"""The WSGI entry point: ``gunicorn wsgi:app``."""
from feedproxy.app import create_app

app = create_app()
