"""feedproxy: per-query filtered feeds of Hugging Face Daily Papers.

The stages, each importing only those before it: ``upstream`` (fetching and
parsing sources into Papers) -> ``store`` (the rolling window of each source,
saved and shared) -> ``search`` (the query language and the index) ->
``render`` (Atom, RSS, JSON Feed) -> ``http`` (parameters, views, the page,
caching, metrics). ``app.create_app`` builds the service; ``wiring`` builds the
sources for the app and for the refresher child.
"""

__version__ = "0.1.0"
